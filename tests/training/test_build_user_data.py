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
    # 4 classes: 1 held out for validation, which gives no different-class pairs to calibrate
    # verification thresholds with; the run says so and still ends well.
    with pytest.warns(UserWarning, match="no calibration.json: the validation set"):
        assert cli_main(args) == 0
    assert (run_dir / "model").is_dir() and (run_dir / "metrics.jsonl").is_file()
    assert not (run_dir / "calibration.json").exists()
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
