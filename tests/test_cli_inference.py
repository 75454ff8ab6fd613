"""The commands that use a trained run: embed, evaluate, verify, index build/search/info.

One short digits run is trained once for the module; every command's output is checked against
numbers computed here independently (numpy brute force on the written vectors)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from tripletkit.cli import main as cli_main
from tripletkit.data.bundled import load_digits
from tripletkit.index.vectors_file import read_vectors, write_vectors
from tripletkit.training import resolve_config
from tripletkit.training.build import train

FAST = {
    "data.dataset": "digits",
    "data.p": 5,
    "data.k": 8,
    "train.epochs": 1,
    "train.quiet": True,
    "train.report": False,
    "train.tensorboard": False,
}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    run = tmp_path_factory.mktemp("cli") / "run"
    train(resolve_config(overrides=FAST), run_dir=run)
    return run


@pytest.fixture(scope="module")
def vectors(run_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("vectors") / "digits.parquet"
    assert cli_main(["embed", "--model", str(run_dir), "--data", "digits", "--out", str(out)]) == 0
    return out


def _cosine_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return 1.0 - a.astype(np.float64) @ b.astype(np.float64).T


def test_run_directory_has_calibrated_thresholds(run_dir):
    calibration = json.loads((run_dir / "calibration.json").read_text())
    assert calibration["distance"] == "cosine"
    thresholds = calibration["thresholds"]
    assert set(thresholds) == {repr(1e-2), repr(1e-3), repr(1e-4)}
    for entry in thresholds.values():
        assert 0.0 <= entry["far"] <= 1.0 and 0.0 <= entry["tar"] <= 1.0
    # A stricter FAR never has a looser (larger) distance threshold.
    values = [thresholds[repr(f)]["value"] for f in (1e-2, 1e-3, 1e-4)]
    assert values[0] >= values[1] >= values[2]


def test_embed_writes_every_item_with_its_label_and_source(vectors, run_dir):
    written = read_vectors(vectors)
    digits = load_digits()
    assert written.vectors.shape == (len(digits.labels), 64)
    np.testing.assert_array_equal(np.asarray(written.labels), digits.labels)
    assert written.sources[:2] == ["digits[0]", "digits[1]"]
    # L2-normalised model output.
    np.testing.assert_allclose(np.linalg.norm(written.vectors, axis=1), 1.0, atol=1e-5)


def test_evaluate_retrieval_matches_brute_force_precision_at_1(run_dir, vectors, tmp_path):
    out = tmp_path / "metrics.json"
    args = ["evaluate", "--model", str(run_dir), "--data", "digits", "--out", str(out)]
    assert cli_main([*args, "--quiet"]) == 0
    metrics = json.loads(out.read_text())["metrics"]
    written = read_vectors(vectors)
    labels = np.asarray(written.labels)
    d = _cosine_distances(written.vectors, written.vectors)
    np.fill_diagonal(d, np.inf)
    p_at_1 = float(np.mean(labels[d.argmin(axis=1)] == labels))
    assert metrics["precision_at_1"] == pytest.approx(p_at_1, abs=2.0 / len(labels))
    assert metrics["num_queries"] == len(labels)


def test_evaluate_verification_reports_eer_and_tar(run_dir, tmp_path):
    out = tmp_path / "verification.json"
    args = ["evaluate", "--model", str(run_dir), "--data", "digits", "--protocol", "verification"]
    assert cli_main([*args, "--out", str(out), "--quiet"]) == 0
    metrics = json.loads(out.read_text())["metrics"]
    assert 0.0 <= metrics["eer"] <= 0.5 < metrics["auc"] <= 1.0
    assert metrics["tar_at_far_0.01"] >= metrics["tar_at_far_0.001"]


def test_evaluate_text_protocol_needs_queries(run_dir, capsys):
    args = ["evaluate", "--model", str(run_dir), "--data", "digits", "--protocol", "text"]
    assert cli_main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--query-data" in err[0]


def test_evaluate_text_with_hubness_bank_matches_brute_force(run_dir, vectors, tmp_path, capsys):
    """Queries, corpus and bank are all the digits: qrels make every same-label image relevant.
    Recall@100 with and without the CSLS correction against numpy on the written vectors."""
    base = ["evaluate", "--model", str(run_dir), "--data", "digits", "--protocol", "text"]
    base += ["--query-data", "digits", "--quiet"]
    plain_out, corrected_out = tmp_path / "plain.json", tmp_path / "csls.json"
    assert cli_main([*base, "--out", str(plain_out)]) == 0
    bank = ["--hubness-bank", "digits", "--hubness-k", "5"]
    assert cli_main([*base, *bank, "--out", str(corrected_out)]) == 0
    written = read_vectors(vectors)
    labels = np.asarray(written.labels)
    d = _cosine_distances(written.vectors, written.vectors)
    offsets = -0.5 * np.sort(d, axis=1)[:, :5].mean(axis=1)  # the bank is the corpus here

    relevant = (labels[:, None] == labels[None, :]).sum(axis=1)

    def recall_at_100(distances: np.ndarray) -> float:
        order = np.argsort(distances, axis=1, kind="stable")[:, :100]
        return float(np.mean((labels[order] == labels[:, None]).sum(axis=1) / relevant))

    plain, corrected = recall_at_100(d), recall_at_100(d + offsets)
    for out, expected in ((plain_out, plain), (corrected_out, corrected)):
        got = json.loads(out.read_text())["metrics"]["recall_at_100"]
        assert got == pytest.approx(expected, abs=1e-3)
    # The correction changed the rankings (the two figures are not the same computation).
    assert abs(plain - corrected) > 1e-3
    capsys.readouterr()
    assert cli_main([*base, "--hubness-bank", "digits", "--hubness-k", "0"]) == 2
    assert "--hubness-k" in capsys.readouterr().err
    assert cli_main([*base, "--hubness-bank", "digits", "--hubness-k", "100000"]) == 2
    assert "holds 1797 items" in capsys.readouterr().err
    retrieval = ["evaluate", "--model", str(run_dir), "--data", "digits"]
    assert cli_main([*retrieval, "--hubness-bank", "digits"]) == 2
    assert "--protocol text only" in capsys.readouterr().err


def test_evaluate_part_and_mention_usage_errors(run_dir, capsys):
    text = ["evaluate", "--model", str(run_dir), "--data", "digits", "--protocol", "text"]
    text += ["--query-data", "digits", "--quiet"]
    cases = [
        (
            ["evaluate", "--model", str(run_dir), "--data", "digits", "--part-separator", ","],
            "--protocol text only",
        ),
        ([*text, "--part-separator", ""], "non-empty"),
        (
            [*text, "--part-separator", ",", "--part-weight", "1.5"],
            "--part-weight must be in [0, 1]",
        ),
        ([*text, "--part-separator", ","], "needs a text model"),
        (
            [*text, "--part-weight", "0.5"],
            "--part-weight needs --part-separator",
        ),  # the digits run takes images
        (
            ["evaluate", "--model", str(run_dir), "--data", "digits", "--mention-penalty", "0.1"],
            "--mention-penalty applies to --protocol text only",
        ),
        ([*text, "--mention-penalty", "nan"], "--mention-penalty must be a finite number"),
        ([*text, "--mention-penalty", "0.1"], "--mention-penalty needs a text model"),
    ]
    for argv, message in cases:
        assert cli_main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], (argv, err)


def _digit_png(path, index: int) -> str:
    image = load_digits().images[index]
    Image.fromarray(np.asarray(image).reshape(image.shape[-2:]).astype(np.uint8)).save(path)
    return str(path)


def test_unlabelled_manifest_embeds_and_serves_as_a_hubness_bank(
    run_dir, vectors, tmp_path, capsys
):
    """A bank of images that are not the corpus, in a manifest without labels: ``embed`` writes
    its vectors with no labels, and ``evaluate --hubness-bank`` corrects the ranking with exactly
    the CSLS offsets of those vectors (numpy on the written files)."""
    folder = tmp_path / "bank"
    folder.mkdir()
    for i in range(40):
        _digit_png(folder / f"{i}.png", 100 + 7 * i)
    manifest = folder / "bank.csv"
    manifest.write_text("path\n" + "".join(f"{i}.png\n" for i in range(40)))
    bank_vectors = tmp_path / "bank.parquet"
    embed = ["embed", "--model", str(run_dir), "--data", str(manifest), "--quiet"]
    assert cli_main([*embed, "--out", str(bank_vectors)]) == 0
    bank = read_vectors(bank_vectors)
    assert bank.vectors.shape == (40, 64) and bank.labels == [None] * 40
    assert [s.rsplit("/", 1)[-1] for s in bank.sources] == [f"{i}.png" for i in range(40)]

    out = tmp_path / "csls.json"
    args = ["evaluate", "--model", str(run_dir), "--data", "digits", "--protocol", "text"]
    args += ["--query-data", "digits", "--hubness-bank", str(manifest), "--hubness-k", "3"]
    assert cli_main([*args, "--quiet", "--out", str(out)]) == 0
    written = read_vectors(vectors)
    labels = np.asarray(written.labels)
    to_bank = _cosine_distances(written.vectors, bank.vectors)  # (corpus, bank)
    offsets = -0.5 * np.sort(to_bank, axis=1)[:, :3].mean(axis=1)
    d = _cosine_distances(written.vectors, written.vectors) + offsets
    order = np.argsort(d, axis=1, kind="stable")[:, :100]
    relevant = (labels[:, None] == labels[None, :]).sum(axis=1)
    expected = float(np.mean((labels[order] == labels[:, None]).sum(axis=1) / relevant))
    got = json.loads(out.read_text())["metrics"]["recall_at_100"]
    assert got == pytest.approx(expected, abs=1e-3)
    # Evaluation itself still needs labels, and says so in one line.
    capsys.readouterr()
    unlabelled = ["evaluate", "--model", str(run_dir), "--data", str(manifest), "--quiet"]
    assert cli_main(unlabelled) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has no labels" in err[0]


def test_image_folder_is_decoded_for_a_one_channel_model(run_dir, tmp_path):
    """The digits model takes 1-channel images: files in a class folder are decoded as grayscale
    (as ``verify`` decodes them), and each embeds exactly as ``verify``'s path does."""
    from tripletkit.inference import embed_inputs, load_run

    files = []
    for label in ("a", "b"):
        (tmp_path / "folder" / label).mkdir(parents=True)
        for i in range(3):
            files.append(_digit_png(tmp_path / "folder" / label / f"{i}.png", len(files)))
    out = tmp_path / "folder.parquet"
    args = ["embed", "--model", str(run_dir), "--data", str(tmp_path / "folder"), "--quiet"]
    assert cli_main([*args, "--out", str(out)]) == 0
    written = read_vectors(out)
    assert written.labels == [0, 0, 0, 1, 1, 1]
    expected = embed_inputs(load_run(run_dir), files).numpy()
    np.testing.assert_allclose(written.vectors, expected, atol=1e-5)


def test_a_manifest_of_distinct_labels_embeds_and_evaluates(run_dir, tmp_path):
    """A corpus in which every item is its own class (documents with their own ids) is not a
    training set, and embedding or evaluating it must not ask for two items of a class."""
    from tripletkit.inference import embed_inputs, load_run

    files = [_digit_png(tmp_path / f"{i}.png", i) for i in range(3)]
    manifest = tmp_path / "items.csv"
    manifest.write_text("path,label\n" + "".join(f"{f},item{i}\n" for i, f in enumerate(files)))
    out = tmp_path / "items.parquet"
    args = ["embed", "--model", str(run_dir), "--data", str(manifest), "--quiet"]
    assert cli_main([*args, "--out", str(out)]) == 0
    written = read_vectors(out)
    expected = embed_inputs(load_run(run_dir), files).numpy()
    np.testing.assert_allclose(written.vectors, expected, atol=1e-5)
    # Each item retrieves itself: the query set is the corpus, so every query's only relevant
    # item is at its own distance 0.
    metrics_out = tmp_path / "metrics.json"
    evaluate = ["evaluate", "--model", str(run_dir), "--data", str(manifest), "--quiet"]
    evaluate += ["--protocol", "text", "--query-data", str(manifest), "--out", str(metrics_out)]
    assert cli_main(evaluate) == 0
    assert json.loads(metrics_out.read_text())["metrics"]["recall_at_1"] == 1.0


def test_verify_same_image_is_same_and_threshold_decides(run_dir, tmp_path, capsys):
    a = _digit_png(tmp_path / "a.png", 0)
    b = _digit_png(tmp_path / "b.png", 1)  # a different digit (0 then 1 in the data)
    assert cli_main(["verify", "--model", str(run_dir), a, a]) == 0
    assert capsys.readouterr().out.startswith("same")
    # Below any possible cosine distance between two different images: "different", exit 3.
    assert cli_main(["verify", "--model", str(run_dir), a, b, "--threshold", "-0.5"]) == 3
    assert capsys.readouterr().out.startswith("different")
    # Above the largest possible cosine distance (2): always "same".
    assert cli_main(["verify", "--model", str(run_dir), a, b, "--threshold", "2.5"]) == 0


def test_verify_names_the_missing_file(run_dir, tmp_path, capsys):
    a = _digit_png(tmp_path / "a.png", 0)
    assert cli_main(["verify", "--model", str(run_dir), a, str(tmp_path / "nope.png")]) == 2
    assert "nope.png" in capsys.readouterr().err


def test_index_build_search_matches_brute_force(vectors, tmp_path):
    index_dir = tmp_path / "index"
    assert cli_main(["index", "build", "--vectors", str(vectors), "--out", str(index_dir)]) == 0
    assert cli_main(["index", "info", str(index_dir)]) == 0
    written = read_vectors(vectors)
    queries = tmp_path / "queries.parquet"
    rng = np.random.default_rng(0)
    query_vectors = rng.standard_normal((7, written.vectors.shape[1])).astype(np.float32)
    write_vectors(queries, query_vectors)
    out = tmp_path / "hits.json"
    args = ["index", "search", "--index", str(index_dir), "--vectors", str(queries), "-k", "5"]
    assert cli_main([*args, "--out", str(out)]) == 0
    results = json.loads(out.read_text())["results"]
    expected = np.argsort(_cosine_distances(query_vectors, written.vectors), axis=1, kind="stable")
    labels = np.asarray(written.labels)
    for row, result in zip(expected, results, strict=True):
        ids = [hit["id"] for hit in result["hits"]]
        np.testing.assert_array_equal(np.asarray(written.ids)[row[:5]], ids)
        assert [hit["label"] for hit in result["hits"]] == labels[row[:5]].tolist()


def test_index_search_needs_queries(vectors, tmp_path, capsys):
    index_dir = tmp_path / "index"
    assert cli_main(["index", "build", "--vectors", str(vectors), "--out", str(index_dir)]) == 0
    assert cli_main(["index", "search", "--index", str(index_dir)]) == 2
    assert "queries" in capsys.readouterr().err
    search = ["index", "search", "--index", str(index_dir), "--vectors", str(vectors)]
    assert cli_main([*search, "--model", "run", "a.png"]) == 2
    assert "not both" in capsys.readouterr().err
    assert cli_main([*search, "-k", "0"]) == 2
    assert "-k must be >= 1" in capsys.readouterr().err


def test_index_search_lists_only_the_items_there_are(vectors, tmp_path):
    """-k beyond the index's size: the hits stop at the last item, with no filler rows."""
    small = tmp_path / "small.parquet"
    written = read_vectors(vectors)
    write_vectors(small, written.vectors[:3], written.labels[:3])
    index_dir = tmp_path / "index"
    assert cli_main(["index", "build", "--vectors", str(small), "--out", str(index_dir)]) == 0
    out = tmp_path / "hits.json"
    search = ["index", "search", "--index", str(index_dir), "--vectors", str(small), "-k", "10"]
    assert cli_main([*search, "--out", str(out)]) == 0
    for result in json.loads(out.read_text())["results"]:
        assert sorted(hit["id"] for hit in result["hits"]) == [0, 1, 2]


def test_missing_run_directory_is_one_clear_line(tmp_path, capsys):
    args = ["embed", "--model", str(tmp_path / "none"), "--data", "digits", "--out", "x.parquet"]
    assert cli_main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "none" in err[0]


@pytest.mark.parametrize(
    "command",
    [
        ["report", "{run}"],
        ["evaluate", "--model", "{run}", "--data", "digits"],
        ["embed", "--model", "{run}", "--data", "digits", "--out", "{tmp}/x.parquet"],
        ["train", "--resume", "{run}", "--epochs", "2"],
    ],
)
@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"data": ', "could not be read"),  # torn by a crash or an editor
        ('{"data": null}', "config section 'data' must be a mapping"),  # edited by hand
        ('{"data": {"pp": 3}}', "unknown config key 'data.pp'; did you mean 'data.p'?"),
    ],
)
def test_a_damaged_run_config_is_one_line_naming_the_file(
    run_dir, tmp_path, capsys, command, content, message
):
    import shutil

    damaged = tmp_path / "run"
    shutil.copytree(run_dir, damaged)
    (damaged / "config.json").write_text(content)
    args = [a.format(run=damaged, tmp=tmp_path) for a in command]
    assert cli_main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "config.json" in err[0] and message in err[0], err


@pytest.mark.parametrize(
    "content",
    [b"{}", b'{"thresholds": ', b'{"thresholds": {"0.001": {"tar": 0.5}}}', b"[1, 2]", b"\xff\xfe"],
)
def test_verify_with_a_damaged_calibration_says_so_and_takes_a_threshold(
    run_dir, tmp_path, capsys, content
):
    import shutil

    damaged = tmp_path / "run"
    shutil.copytree(run_dir, damaged)
    (damaged / "calibration.json").write_bytes(content)
    a = _digit_png(tmp_path / "a.png", 0)
    assert cli_main(["verify", "--model", str(damaged), a, a]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "calibration.json" in err[0] and "--threshold" in err[0]
    assert cli_main(["verify", "--model", str(damaged), a, a, "--threshold", "0.5"]) == 0


def test_verify_says_when_its_threshold_rests_on_too_few_pairs(run_dir, tmp_path, capsys):
    calibration = json.loads((run_dir / "calibration.json").read_text())
    a = _digit_png(tmp_path / "a.png", 0)
    for far, entry in calibration["thresholds"].items():
        assert cli_main(["verify", "--model", str(run_dir), a, a, "--far", far]) == 0
        out = capsys.readouterr().out
        assert ("too few different-class" in out) == (not entry["reliable"])
        assert entry["reliable"] == (calibration["impostor_pairs"] * float(far) >= 30)


def test_embedding_is_what_the_model_computes(run_dir, vectors):
    from tripletkit.models import load_model

    model = load_model(run_dir / "model").eval()
    digits = load_digits()
    x = torch.as_tensor(np.asarray(digits.images[:16]), dtype=torch.float32) / 255.0
    x = x.reshape(16, 1, 8, 8)
    x = (x - 0.5) / 0.5  # the small CNN's input normalisation
    with torch.no_grad():
        expected = model(x).numpy()
    np.testing.assert_allclose(read_vectors(vectors).vectors[:16], expected, atol=1e-5)


def test_average_models_writes_the_mean_of_two_runs_usable_as_a_run(run_dir, tmp_path):
    from tripletkit.models import load_model

    second = tmp_path / "seed1"
    train(resolve_config(overrides={**FAST, "train.seed": 1}), run_dir=second)
    out = tmp_path / "soup"
    code = cli_main(
        ["average-models", str(run_dir), str(second), "--out", str(out), "--weights", "1,3"]
    )
    assert code == 0
    assert (out / "config.json").read_text() == (run_dir / "config.json").read_text()
    soup = load_model(out / "model").state_dict()
    first_state = load_model(run_dir / "model").state_dict()
    second_state = load_model(second / "model").state_dict()
    moved = 0
    for name, value in soup.items():
        if value.is_floating_point():
            expected = (first_state[name].double() + 3 * second_state[name].double()) / 4
            np.testing.assert_allclose(value.double().numpy(), expected.numpy(), atol=1e-6)
            moved += not torch.equal(first_state[name], second_state[name])
        else:
            assert torch.equal(value, first_state[name])
    assert moved > 0  # the two seeds really trained different weights
    # The averaged directory works wherever a run directory does.
    vectors_out = tmp_path / "soup.parquet"
    assert (
        cli_main(["embed", "--model", str(out), "--data", "digits", "--out", str(vectors_out)]) == 0
    )
    assert read_vectors(vectors_out).vectors.shape[0] == len(load_digits().labels)


def test_ensemble_writes_one_model_whose_vectors_are_the_members_over_sqrt_2(run_dir, tmp_path):
    from tripletkit.models import load_model

    second = tmp_path / "seed1"
    train(resolve_config(overrides={**FAST, "train.seed": 1}), run_dir=second)
    out = tmp_path / "ensemble"
    assert cli_main(["ensemble", str(run_dir), str(second), "--out", str(out)]) == 0
    assert (out / "config.json").read_text() == (run_dir / "config.json").read_text()
    members = [load_model(d / "model") for d in (run_dir, second)]
    assert load_model(out / "model").embedding_dim == sum(m.embedding_dim for m in members)
    # The ensemble directory works wherever a run directory does: its vectors are each
    # member's unit vectors, scaled by 1/sqrt(2), side by side.
    vectors = {}
    for name, model_dir in (("a", run_dir), ("b", second), ("ab", out)):
        path = tmp_path / f"{name}.parquet"
        assert (
            cli_main(["embed", "--model", str(model_dir), "--data", "digits", "--out", str(path)])
            == 0
        )
        vectors[name] = read_vectors(path).vectors.astype(np.float64)
    expected = np.concatenate([vectors["a"], vectors["b"]], axis=1) / np.sqrt(2)
    np.testing.assert_allclose(vectors["ab"], expected, atol=1e-5)
    assert not np.allclose(vectors["a"], vectors["b"])  # two seeds, two different members


def test_ensemble_usage_errors(run_dir, tmp_path, capsys):
    assert cli_main(["ensemble", str(run_dir), "--out", str(run_dir)]) == 2
    assert "is one of the input models" in capsys.readouterr().err
    assert cli_main(["ensemble", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2


def test_average_models_usage_errors(run_dir, tmp_path, capsys):
    assert cli_main(["average-models", str(run_dir), "--out", str(run_dir)]) == 2
    assert "is one of the input models" in capsys.readouterr().err
    code = cli_main(
        ["average-models", str(run_dir), "--out", str(tmp_path / "o"), "--weights", "1,2"]
    )
    assert code == 2
    assert "--weights has 2 values for 1 models" in capsys.readouterr().err
    code = cli_main(
        ["average-models", str(run_dir), "--out", str(tmp_path / "o"), "--weights", "-1"]
    )
    assert code == 2
    assert "finite and non-negative" in capsys.readouterr().err
    assert (
        cli_main(["average-models", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    )
