"""Training on the user's own data (``data.dataset`` image-folder, manifest, vectors), end to end
through :func:`tripletkit.training.build.train`, with and without a separate validation file.

The data are small synthetic classes (a colour or a centre per class). Each test checks what the
run wrote (model, validation records), and the folder test that the embedding separates the
colours. Before these tests, ``data.dataset = "image-folder"`` failed at once and a ``val_path``
of images reached the model as raw uint8 files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from tripletkit.cli import main as cli_main
from tripletkit.index.vectors_file import read_vectors
from tripletkit.training import resolve_config
from tripletkit.training.build import train

QUICK = {
    "data.p": 2,
    "data.k": 3,
    "data.augment": False,
    "train.epochs": 2,
    "train.quiet": True,
    "train.report": False,
    "train.tensorboard": False,
}
COLOURS = {
    "red": (200, 30, 30),
    "green": (30, 200, 30),
    "blue": (30, 30, 200),
    "grey": (90, 90, 90),
}


def _image(path, colour, seed: int) -> None:
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.asarray(colour) + rng.normal(0, 25, (12, 12, 3)), 0, 255)
    Image.fromarray(pixels.astype(np.uint8)).save(path)


@pytest.fixture
def image_folder(tmp_path):
    root = tmp_path / "photos"
    for c, (name, colour) in enumerate(COLOURS.items()):
        (root / name).mkdir(parents=True)
        for i in range(5):
            _image(root / name / f"{i}.png", colour, 10 * c + i)
    return root


def _epoch_records(run_dir) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r.get("kind") == "epoch"]


def test_image_folder_trains_embeds_and_evaluates_from_the_command_line(image_folder, tmp_path):
    """The README's own-images commands: train from a folder, then evaluate and embed it."""
    run_dir = tmp_path / "run"
    args = ["train", "--data", "image-folder", "--data-path", str(image_folder)]
    args += ["--model", "small_cnn", "--epochs", "2", "--p", "2", "--k", "3"]
    args += ["--run-dir", str(run_dir), "--quiet", "--set", "data.image_size=12"]
    args += ["--set", "data.augment=false", "--set", "train.report=false"]
    assert cli_main(args) == 0
    assert (run_dir / "model").is_dir() and (run_dir / "metrics.jsonl").is_file()
    # 4 classes: 2 held out for validation, enough for verification thresholds.
    assert (run_dir / "calibration.json").is_file()
    metrics = tmp_path / "metrics.json"
    evaluate = ["evaluate", "--model", str(run_dir), "--data", str(image_folder), "--quiet"]
    assert cli_main([*evaluate, "--out", str(metrics)]) == 0
    assert json.loads(metrics.read_text())["metrics"]["num_queries"] == 20
    out = tmp_path / "photos.parquet"
    embed = ["embed", "--model", str(run_dir), "--data", str(image_folder), "--quiet"]
    assert cli_main([*embed, "--out", str(out)]) == 0
    written = read_vectors(out)
    assert written.vectors.shape[0] == 20 and written.labels == [
        c for c in range(4) for _ in range(5)
    ]
    # Plain colours: every image's nearest other image is of its own colour.
    v = written.vectors / np.linalg.norm(written.vectors, axis=1, keepdims=True)
    similarity = v @ v.T
    np.fill_diagonal(similarity, -np.inf)
    labels = np.asarray(written.labels)
    assert np.mean(labels[similarity.argmax(axis=1)] == labels) >= 0.9


def test_image_manifest_with_a_validation_manifest(image_folder, tmp_path):
    """``data.val_path``: validation images are prepared like the training ones (resized and
    normalised) and validated on every epoch."""
    rows = [
        f"{p.relative_to(image_folder)},{p.parent.name}"
        for p in sorted(image_folder.rglob("*.png"))
    ]
    train_rows = [r for r in rows if r.split(",")[1] not in ("blue", "grey")]
    val_rows = [r for r in rows if r.split(",")[1] in ("blue", "grey")]
    (image_folder / "train.csv").write_text("path,label\n" + "\n".join(train_rows) + "\n")
    (image_folder / "val.csv").write_text("path,label\n" + "\n".join(val_rows) + "\n")
    run_dir = tmp_path / "run"
    overrides = {**QUICK, "data.dataset": "manifest", "data.path": str(image_folder / "train.csv")}
    overrides |= {"data.val_path": str(image_folder / "val.csv"), "data.image_size": 12}
    train(resolve_config(overrides=overrides), run_dir=run_dir)
    epochs = _epoch_records(run_dir)
    # Before training and after each of the 2 epochs, on the 10 validation images.
    assert len(epochs) == 3 and all("map_at_r" in e for e in epochs)


def test_vectors_with_a_validation_file(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(6, 16))

    def write(path, classes):
        labels = np.repeat(classes, 8)
        features = centres[labels] + 0.3 * rng.normal(size=(len(labels), 16))
        table = pa.table({"features": list(features.astype(np.float32)), "label": labels})
        pq.write_table(table, path)

    write(tmp_path / "train.parquet", [0, 1, 2, 3])
    write(tmp_path / "val.parquet", [4, 5])
    run_dir = tmp_path / "run"
    overrides = {**QUICK, "data.dataset": "vectors", "data.path": str(tmp_path / "train.parquet")}
    overrides |= {"data.val_path": str(tmp_path / "val.parquet")}
    train(resolve_config(overrides=overrides), run_dir=run_dir)
    assert (run_dir / "model").is_dir()
    assert len(_epoch_records(run_dir)) == 3  # before training and after each of 2 epochs


def test_evaluate_matches_query_and_gallery_labels_by_value(image_folder, tmp_path):
    """Queries and gallery in two manifests: each file numbers its own classes (grey, red -> 0, 1
    here; blue, green, grey, red -> 0..3 there), so labels must be compared by value. Every
    query image is also in the gallery, at distance 0: rank-1 CMC is 1 and each query finds all
    5 images of its colour within the top 10 once labels are matched right."""
    run_dir = tmp_path / "run"
    overrides = {**QUICK, "data.dataset": "image-folder", "data.path": str(image_folder)}
    overrides |= {"data.image_size": 12, "model.name": "small_cnn", "train.epochs": 1}
    train(resolve_config(overrides=overrides), run_dir=run_dir)
    images = sorted(image_folder.rglob("*.png"))
    gallery = image_folder / "gallery.csv"
    gallery.write_text(
        "path,label\n" + "".join(f"{p.relative_to(image_folder)},{p.parent.name}\n" for p in images)
    )
    queries = image_folder / "queries.csv"
    chosen = [p for p in images if p.parent.name in ("grey", "red")]
    queries.write_text(
        "path,label\n" + "".join(f"{p.relative_to(image_folder)},{p.parent.name}\n" for p in chosen)
    )
    base = ["evaluate", "--model", str(run_dir), "--data", str(gallery), "--quiet"]
    base += ["--query-data", str(queries)]
    reid_out, text_out = tmp_path / "reid.json", tmp_path / "text.json"
    assert cli_main([*base, "--protocol", "reid", "--out", str(reid_out)]) == 0
    assert cli_main([*base, "--protocol", "text", "--out", str(text_out)]) == 0
    assert json.loads(reid_out.read_text())["metrics"]["cmc_rank_1"] == pytest.approx(1.0)
    # Plain colours, far apart: the 5 same-colour images are the 5 nearest.
    assert json.loads(text_out.read_text())["metrics"]["recall_at_10"] == pytest.approx(1.0)


def test_a_data_path_alone_trains_on_that_data(image_folder, tmp_path):
    """``--data-path`` without ``--data``: the data at the path, never a bundled set instead."""
    from tripletkit.training.build import _dataset_of_path, build_run

    (tmp_path / "m.csv").write_text("path,label\n")
    (tmp_path / "f.npy").write_bytes(b"")
    (tmp_path / "x.bin").write_bytes(b"")
    assert _dataset_of_path(str(image_folder)) == "image-folder"
    assert _dataset_of_path(str(tmp_path / "m.csv")) == "manifest"
    assert _dataset_of_path(str(tmp_path / "f.npy")) == "vectors"
    with pytest.raises(ValueError, match=r"set data\.dataset"):
        _dataset_of_path(str(tmp_path / "x.bin"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        _dataset_of_path(str(tmp_path / "nope.csv"))
    config = resolve_config(overrides={**QUICK, "data.path": str(image_folder)})
    config.data.image_size = 12
    built = build_run(config)
    summary = built.data.summary
    assert summary["dataset"] == "image-folder"
    assert summary["train_items"] + summary["validation_items"] == 20


def test_one_validation_class_is_warned_about_and_skips_calibration(image_folder, tmp_path):
    """3 classes leave 1 for validation: retrieval metrics are 1.0 whatever the model, and there
    are no different-class pairs to calibrate verification with. Both are said; the run ends."""
    for extra in image_folder.iterdir():
        if extra.name == "grey":
            for f in extra.iterdir():
                f.unlink()
            extra.rmdir()
    run_dir = tmp_path / "run"
    overrides = {**QUICK, "data.dataset": "image-folder", "data.path": str(image_folder)}
    overrides |= {"data.image_size": 12, "train.epochs": 1}
    with pytest.warns(UserWarning) as caught:
        train(resolve_config(overrides=overrides), run_dir=run_dir)
    messages = [str(w.message) for w in caught]
    assert any("the validation set holds 1 class" in m for m in messages)
    assert any("no calibration.json" in m for m in messages)
    assert (run_dir / "model").is_dir() and not (run_dir / "calibration.json").exists()


def test_a_run_directory_holding_a_run_is_not_overwritten_by_accident(image_folder, tmp_path):
    """A second run into the same directory is refused (one line, exit 2) and leaves the first
    run as it was; train.overwrite replaces it, removing the old run's files first."""
    run_dir = tmp_path / "run"
    args = ["train", "--data-path", str(image_folder), "--epochs", "1", "--p", "2", "--k", "3"]
    args += ["--run-dir", str(run_dir), "--quiet", "--set", "data.image_size=12"]
    args += ["--set", "train.report=false", "--set", "data.augment=false"]
    assert cli_main(args) == 0
    before = {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()}
    (run_dir / "report-old.png").write_bytes(b"stale")
    assert cli_main([*args, "--set", "train.epochs=2"]) == 2
    assert {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir() if p.name in before} == before
    config = json.loads((run_dir / "config.json").read_text())
    assert config["train"]["epochs"] == 1
    assert cli_main([*args, "--set", "train.epochs=2", "--set", "train.overwrite=true"]) == 0
    assert json.loads((run_dir / "config.json").read_text())["train"]["epochs"] == 2
    assert not (run_dir / "report-old.png").exists()


def test_a_model_that_does_not_take_the_data_is_one_clear_line(image_folder, tmp_path, capsys):
    """Images to a vector model, features to an image model: exit 2 and a line naming the model
    and what the data holds, not a shape error from deep inside the first step."""
    args = ["train", "--data-path", str(image_folder), "--model", "mlp", "--quiet"]
    assert cli_main([*args, "--run-dir", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model.name 'mlp'" in err[0] and "the data holds images" in err[0]
    from tripletkit.training.build import _build_model

    config = resolve_config(overrides={"model.name": "small_cnn"})
    with pytest.raises(ValueError, match=r"model.name 'small_cnn' .* the data holds vectors"):
        _build_model(config, "vector", None, 3)


def test_embed_refuses_data_the_model_does_not_take_and_config_paths_are_absolute(
    image_folder, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(image_folder.parent)
    run_dir = tmp_path / "run"
    args = ["train", "--data-path", image_folder.name, "--epochs", "1", "--p", "2", "--k", "3"]
    args += ["--run-dir", str(run_dir), "--quiet", "--set", "data.image_size=12"]
    args += ["--set", "train.report=false"]
    assert cli_main(args) == 0
    # Given relative, saved absolute: the run's files find the data from any directory.
    saved = json.loads((run_dir / "config.json").read_text())["data"]["path"]
    assert saved == str(image_folder.resolve())
    texts = tmp_path / "texts.csv"
    texts.write_text("text,label\na boot,shoe\na sandal,shoe\n")
    embed = ["embed", "--model", str(run_dir), "--quiet"]
    assert cli_main([*embed, "--data", str(texts), "--out", str(tmp_path / "t.parquet")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds texts" in err[0] and "takes images" in err[0]
    assert cli_main([*embed, "--data", str(image_folder), "--out", str(tmp_path / "v.csv")]) == 2
    assert "name it .parquet" in capsys.readouterr().err
    assert not (tmp_path / "v.csv").exists()


def test_npy_features_train_with_a_labels_file_and_embed_without(tmp_path):
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(6, 16))
    labels = np.repeat(np.arange(6), 8)
    features = (centres[labels] + 0.3 * rng.normal(size=(48, 16))).astype(np.float32)
    np.save(tmp_path / "x.npy", features)
    np.save(tmp_path / "y.npy", labels)
    run_dir = tmp_path / "run"
    args = ["train", "--data-path", str(tmp_path / "x.npy"), "--epochs", "1", "--p", "2"]
    args += ["--k", "3", "--run-dir", str(run_dir), "--quiet", "--set", "train.report=false"]
    assert cli_main(args) == 2  # features alone: which labels? one clear line
    assert cli_main([*args, "--set", f"data.labels_path={tmp_path / 'y.npy'}"]) == 0
    out = tmp_path / "e.parquet"
    embed = ["embed", "--model", str(run_dir), "--data", str(tmp_path / "x.npy"), "--quiet"]
    assert cli_main([*embed, "--out", str(out)]) == 0
    written = read_vectors(out)
    assert written.vectors.shape[0] == 48 and written.labels == [None] * 48


def test_vectors_files_and_index_search_carry_class_names(image_folder, tmp_path, capsys):
    """Label ids are numbered per file (red is 3 of 4 classes here, 1 of 2 there); the class
    column keeps the names, and index search shows them."""
    run_dir = tmp_path / "run"
    overrides = {**QUICK, "data.dataset": "image-folder", "data.path": str(image_folder)}
    overrides |= {"data.image_size": 12, "train.epochs": 1}
    train(resolve_config(overrides=overrides), run_dir=run_dir)
    chosen = [p for p in sorted(image_folder.rglob("*.png")) if p.parent.name in ("grey", "red")]
    manifest = tmp_path / "two.csv"  # beside the folder: a file inside is not an image
    manifest.write_text(
        "path,label\n" + "".join(f"{p.relative_to(tmp_path)},{p.parent.name}\n" for p in chosen)
    )
    everything, two = tmp_path / "all.parquet", tmp_path / "two.parquet"
    for data, out in ((image_folder, everything), (manifest, two)):
        args = ["embed", "--model", str(run_dir), "--data", str(data), "--quiet"]
        assert cli_main([*args, "--out", str(out)]) == 0
    whole, part = read_vectors(everything), read_vectors(two)
    assert whole.classes == [c for c in ("blue", "green", "grey", "red") for _ in range(5)]
    assert part.classes == ["grey"] * 5 + ["red"] * 5 and part.labels == [0] * 5 + [1] * 5
    index_dir = tmp_path / "index"
    assert cli_main(["index", "build", "--vectors", str(everything), "--out", str(index_dir)]) == 0
    out = tmp_path / "hits.json"
    search = ["index", "search", "--index", str(index_dir), "--vectors", str(two), "-k", "1"]
    capsys.readouterr()
    assert cli_main([*search, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    results = json.loads(out.read_text())["results"]
    # Each query is in the index at distance 0: its own image, with its class name.
    assert [r["hits"][0]["class"] for r in results] == part.classes
    assert "label red" in printed and "label grey" in printed


def test_labels_of_two_datasets_compare_by_value_as_text():
    """A folder's class "1" is a CSV's label 1; each side numbers its classes from 0."""
    from types import SimpleNamespace

    from tripletkit.inference import shared_label_ids

    from_csv = SimpleNamespace(classes=[1, 2])
    from_folder = SimpleNamespace(classes=["0", "1", "2"])
    q, g = shared_label_ids(from_csv, np.array([0, 0, 1]), from_folder, np.array([0, 1, 2]))
    assert q.tolist() == [g[1], g[1], g[2]] and len(set(g.tolist())) == 3
    bundled = SimpleNamespace(classes=None)  # ids are the labels themselves
    q, g = shared_label_ids(bundled, np.array([3, 4]), from_folder, np.array([0]))
    assert q[0] != g[0] and q[0] != q[1]


def test_six_classes_with_the_default_batch_of_five_still_train(tmp_path):
    """The second held-out class is taken only where the rest still fills a P-class batch."""
    from tripletkit.training.build import build_run

    rng = np.random.default_rng(0)
    np.save(tmp_path / "x.npy", rng.normal(size=(36, 4)).astype(np.float32))
    np.save(tmp_path / "y.npy", np.repeat(np.arange(6), 6))
    overrides = {"data.path": str(tmp_path / "x.npy"), "data.labels_path": str(tmp_path / "y.npy")}
    with pytest.warns(UserWarning, match="the validation set holds 1 class"):
        built = build_run(resolve_config(overrides={**overrides, "data.p": 5}))
    assert built.data.summary["num_train_classes"] == 5
    built = build_run(resolve_config(overrides={**overrides, "data.p": 4}))
    assert built.data.summary["num_train_classes"] == 4


def test_a_run_with_relative_data_paths_resumes_and_saves_them_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    np.save(tmp_path / "x.npy", rng.normal(size=(48, 4)).astype(np.float32))
    np.save(tmp_path / "y.npy", np.repeat(np.arange(6), 8))
    overrides = {**QUICK, "data.path": "x.npy", "data.labels_path": "y.npy", "data.p": 2}
    train(resolve_config(overrides=overrides), run_dir=tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["data"]
    assert saved["path"] == str(tmp_path / "x.npy")
    assert saved["labels_path"] == str(tmp_path / "y.npy")
    monkeypatch.chdir(tmp_path.parent)
    assert cli_main(["train", "--resume", str(tmp_path / "run")]) == 0


def test_tune_margin_train_best_refuses_a_used_out_before_the_trials(tmp_path, capsys):
    out = tmp_path / "tuned"
    (out / "checkpoints").mkdir(parents=True)
    args = ["tune-margin", "--data", "digits", "--margins", "0.1,0.2", "--train-best"]
    assert cli_main([*args, "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "already holds a run (checkpoints)" in err
    assert not (out / "trials").exists() and list(out.iterdir()) == [out / "checkpoints"]


def test_an_image_folder_with_a_validation_manifest(image_folder, tmp_path):
    """Training data and validation data may be laid out differently (folder / manifest)."""
    val = tmp_path / "val"
    for name, colour in (("cyan", (30, 200, 200)), ("pink", (230, 120, 160))):
        (val / name).mkdir(parents=True)
        for i in range(3):
            _image(val / name / f"{i}.png", colour, 100 + i)
    manifest = tmp_path / "val.csv"
    manifest.write_text(
        "path,label\n"
        + "".join(
            f"{p.relative_to(tmp_path)},{p.parent.name}\n" for p in sorted(val.rglob("*.png"))
        )
    )
    run_dir = tmp_path / "run"
    overrides = {**QUICK, "data.path": str(image_folder), "data.val_path": str(manifest)}
    overrides |= {"data.image_size": 12, "train.epochs": 1}
    train(resolve_config(overrides=overrides), run_dir=run_dir)
    epochs = _epoch_records(run_dir)
    assert len(epochs) == 2 and all("map_at_r" in e for e in epochs)
    assert (run_dir / "calibration.json").is_file()  # 2 validation classes: pairs of both kinds


@pytest.mark.parametrize("layout", ["image-folder", "manifest"])
def test_an_unreadable_image_is_reported_once_and_left_out(image_folder, tmp_path, layout):
    import warnings

    from tripletkit.data import SkippedItemsWarning
    from tripletkit.training.build import build_run

    (image_folder / "red" / "broken.png").write_text("not an image")
    path = image_folder
    if layout == "manifest":
        path = tmp_path / "photos.csv"
        rows = [
            f"photos/{p.parent.name}/{p.name},{p.parent.name}"
            for p in sorted(image_folder.glob("*/*.png"))
        ]
        path.write_text("path,label\n" + "\n".join(rows) + "\n")
    config = resolve_config(overrides={**QUICK, "data.dataset": layout, "data.path": str(path)})
    config.data.image_size = 12
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        built = build_run(config)
    skipped = [w for w in caught if issubclass(w.category, SkippedItemsWarning)]
    assert len(skipped) == 1 and "broken.png" in str(skipped[0].message)
    summary = built.data.summary
    assert summary["train_items"] + summary["validation_items"] == 20


@pytest.mark.parametrize(("per_class", "unreliable"), [(10, {1e-2, 1e-3, 1e-4}), (500, set())])
def test_calibration_marks_fars_the_validation_pairs_cannot_measure(
    tmp_path, per_class, unreliable
):
    import warnings

    from tripletkit.data import FeatureDataset
    from tripletkit.models import create_model
    from tripletkit.training.build import calibrate

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), per_class)
    features = rng.normal(size=(len(labels), 4)).astype(np.float32) + labels[:, None]
    validation = FeatureDataset(features, labels)
    # Different-class pairs, counted by hand: every pair minus the same-class ones.
    n = len(labels)
    impostors = (n * n - 3 * per_class * per_class) // 2
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        calibration = calibrate(create_model("mlp", in_features=4), validation, tmp_path)
    assert calibration["impostor_pairs"] == impostors
    marked = {float(far) for far, t in calibration["thresholds"].items() if not t["reliable"]}
    assert marked == unreliable == {f for f in (1e-2, 1e-3, 1e-4) if impostors * f < 30}
    messages = [str(w.message) for w in caught if "calibration.json" in str(w.message)]
    assert len(messages) == (1 if unreliable else 0)
    if unreliable:
        assert f"{impostors:,} different-class pairs" in messages[0]
    assert json.loads((tmp_path / "calibration.json").read_text()) == calibration


def test_held_out_split_augments_anew_each_epoch_and_validates_unaugmented(image_folder):
    """The training side of a class-held-out split passes set_epoch on to the dataset, so the
    seeded augmentation changes with the epoch (and repeats within one); the validation side,
    a copy of the same checked files, is prepared without augmentation."""
    import torch

    from tripletkit.training.build import build_run

    config = resolve_config(
        overrides={**QUICK, "data.path": str(image_folder), "data.augment": True}
    )
    config.data.image_size = 12
    data = build_run(config).data
    train, validation = data.train, data.validation
    first = train[0][0]
    assert torch.equal(first, train[0][0])  # seeded: the same within an epoch
    train.set_epoch(1)
    assert not torch.equal(first, train[0][0])
    train.set_epoch(0)
    assert torch.equal(first, train[0][0])
    before = validation[0][0]
    validation.set_epoch(1)
    assert torch.equal(before, validation[0][0])
    assert validation.dataset.transform is not train.dataset.transform
    assert validation.dataset.paths == train.dataset.paths
