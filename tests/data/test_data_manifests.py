"""Manifests: CSV/JSONL/Parquet, image and text items, triplets, pairs, and every bad-input error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tripletkit.data import (
    ImageFileDataset,
    PairManifestDataset,
    SkippedItemsWarning,
    TextDataset,
    TripletManifestDataset,
    UnlabelledDataset,
    manifest_dataset,
    read_manifest,
    resolve_item_path,
    transforms,
)


def write(path: Path, rows: list[dict], fmt: str) -> Path:
    """Write ``rows`` as CSV, JSONL or Parquet (None = an empty cell / null)."""
    path = path.with_suffix("." + fmt)
    if fmt == "csv":
        names = list(rows[0])
        lines = [",".join(names)] + [
            ",".join("" if r[n] is None else str(r[n]) for n in names) for r in rows
        ]
        path.write_text("\n".join(lines) + "\n")
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        pa = pytest.importorskip("pyarrow", reason="Parquet needs pyarrow (tripletkit[data])")
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@pytest.fixture
def images(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    (root / "img").mkdir(parents=True)
    for i, color in enumerate([(255, 0, 0), (250, 0, 0), (0, 255, 0), (0, 250, 0)]):
        Image.new("RGB", (6, 4), color).save(root / "img" / f"{i}.png")
    return root


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_image_manifest_items_labels_and_classes(images: Path, fmt: str):
    rows = [
        {"path": f"img/{i}.png", "label": lab}
        for i, lab in enumerate(["red", "red", "green", "green"])
    ]
    dataset = manifest_dataset(write(images / "train", rows, fmt), transforms.ToFloat())
    assert isinstance(dataset, ImageFileDataset)
    assert dataset.classes == ["green", "red"]
    assert dataset.labels.tolist() == [1, 1, 0, 0]
    image, label = dataset[2]
    assert image.shape == (3, 4, 6) and label == 0
    assert float(image[1, 0, 0]) == 1.0


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_text_manifest(tmp_path: Path, fmt: str):
    rows = [
        {"text": "a sandal", "label": 3},
        {"text": "a boot", "label": 3},
        {"text": "a cap", "label": 1},
    ]
    dataset = manifest_dataset(write(tmp_path / "texts", rows, fmt))
    assert isinstance(dataset, TextDataset)
    assert dataset.classes == [1, 3]
    assert [dataset[i] for i in range(3)] == [("a sandal", 1), ("a boot", 1), ("a cap", 0)]


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_text_manifest_without_labels_when_they_are_optional(tmp_path: Path, fmt: str):
    manifest = write(tmp_path / "corpus", [{"text": t} for t in ("a boot", "a cap", "a hat")], fmt)
    with pytest.raises(ValueError, match="no column 'label'"):
        manifest_dataset(manifest)  # labels are required unless said otherwise
    dataset = manifest_dataset(manifest, require_labels=False)
    assert isinstance(dataset, UnlabelledDataset)
    assert dataset.labels is None and dataset.classes is None
    assert len(dataset) == 3 and dataset.texts == ["a boot", "a cap", "a hat"]
    assert [dataset[i][0] for i in range(3)] == ["a boot", "a cap", "a hat"]
    # With labels present, require_labels=False changes nothing: a labelled dataset.
    labelled = write(tmp_path / "l", [{"text": "a", "label": 1}, {"text": "b", "label": 1}], fmt)
    assert manifest_dataset(labelled, require_labels=False).labels.tolist() == [0, 0]


def test_image_manifest_without_labels_matches_the_labelled_one(images: Path):
    (images / "img" / "broken.png").write_bytes(b"nope")
    paths = [f"img/{i}.png" for i in (3, 0, 2)] + ["img/broken.png"]
    unlabelled = write(images / "u", [{"path": p} for p in paths], "csv")
    with pytest.warns(SkippedItemsWarning, match=r"1 of 4 items could not be read"):
        dataset = manifest_dataset(unlabelled, transforms.ToFloat(), require_labels=False)
    assert dataset.labels is None and len(dataset) == 3 and dataset.num_skipped == 1
    assert [Path(p).name for p in dataset.paths] == ["3.png", "0.png", "2.png"]
    labelled = write(images / "l", [{"path": p, "label": 0} for p in paths[:3]], "csv")
    reference = manifest_dataset(labelled, transforms.ToFloat(), require_positives=False)
    # Item by item and through a DataLoader (the batched fetch), the same images in order.
    for i in range(3):
        torch.testing.assert_close(dataset[i][0], reference[i][0], rtol=0, atol=0)
    x, _ = next(iter(torch.utils.data.DataLoader(dataset, batch_size=3)))
    torch.testing.assert_close(x, torch.stack([reference[i][0] for i in range(3)]))


def test_root_argument_and_loader(images: Path, tmp_path: Path):
    manifest = write(
        tmp_path / "elsewhere", [{"path": f"img/{i}.png", "label": i // 2} for i in range(4)], "csv"
    )
    dataset = manifest_dataset(manifest, transforms.ToFloat(), root=images)
    x, y = next(iter(torch.utils.data.DataLoader(dataset, batch_size=4)))
    assert x.shape == (4, 3, 4, 6) and y.tolist() == [0, 0, 1, 1]


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_missing_column_names_file_column_and_expectation(tmp_path: Path, fmt: str):
    manifest = write(tmp_path / "m", [{"text": "a", "class": 1}, {"text": "b", "class": 1}], fmt)
    with pytest.raises(
        ValueError,
        match=rf"manifest .*m\.{fmt} has no column 'label' \(found: 'text', 'class'\); expected a 'label' column",
    ):
        manifest_dataset(manifest)
    assert manifest_dataset(manifest, label_column="class").classes == [1]


def test_neither_or_both_content_columns(tmp_path: Path):
    with pytest.raises(ValueError, match="neither a 'path' nor a 'text' column"):
        manifest_dataset(write(tmp_path / "a", [{"file": "x", "label": 1}], "csv"))
    with pytest.raises(ValueError, match="both a 'path' and a 'text' column"):
        manifest_dataset(write(tmp_path / "b", [{"path": "x", "text": "y", "label": 1}], "csv"))


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_missing_labels_name_the_rows(tmp_path: Path, fmt: str):
    rows = [
        {"text": t, "label": lab}
        for t, lab in [("a", 1.0), ("b", None), ("c", 2.0), ("d", float("nan"))]
    ]
    if fmt == "jsonl":
        rows[3]["label"] = None  # JSON has no NaN
    where = {"csv": "line 3, line 5", "jsonl": "line 2, line 4", "parquet": "row 1, row 3"}[fmt]
    with pytest.raises(
        ValueError,
        match=rf"column 'label' has 2 missing values .* at {where}; every row needs a label",
    ):
        manifest_dataset(write(tmp_path / "m", rows, fmt))


def test_empty_manifest_and_all_distinct_labels(tmp_path: Path):
    (tmp_path / "empty.csv").write_text("text,label\n")
    with pytest.raises(ValueError, match=r"empty\.csv has no rows"):
        manifest_dataset(tmp_path / "empty.csv")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(ValueError, match="has no rows"):
        manifest_dataset(tmp_path / "empty.jsonl")
    distinct = write(
        tmp_path / "d", [{"text": "a", "label": "x"}, {"text": "b", "label": "y"}], "csv"
    )
    with pytest.raises(
        ValueError, match=r"d\.csv: every one of the 2 items has a distinct 'label' value"
    ):
        manifest_dataset(distinct)
    assert len(manifest_dataset(distinct, require_positives=False)) == 2


def test_bad_files_are_explained(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_manifest(tmp_path / "nope.csv")
    (tmp_path / "m.xlsx").write_text("x")
    with pytest.raises(ValueError, match=r"expected \.csv, \.tsv, \.jsonl"):
        read_manifest(tmp_path / "m.xlsx")
    (tmp_path / "bad.jsonl").write_text('{"text": "a", "label": 1}\n{not json}\n')
    with pytest.raises(ValueError, match="line 2 is not valid JSON"):
        read_manifest(tmp_path / "bad.jsonl")
    (tmp_path / "list.jsonl").write_text("[1, 2]\n")
    with pytest.raises(ValueError, match="line 1 is a JSON list"):
        read_manifest(tmp_path / "list.jsonl")


def test_tsv_and_line_numbers(tmp_path: Path):
    (tmp_path / "m.tsv").write_text('text\tlabel\na\t1\n"multi\nline"\t2\nc\t\n')
    manifest = read_manifest(tmp_path / "m.tsv")
    assert manifest.num_rows == 3
    assert manifest.where(2) == "line 5"  # the quoted field spans lines 3-4


@pytest.mark.parametrize("bad", ["../../etc/passwd", "/etc/passwd", "img/../../outside.png"])
def test_paths_escaping_the_root_are_refused(images: Path, bad: str):
    rows = [{"path": "img/0.png", "label": 1}, {"path": bad, "label": 1}]
    manifest = write(images / "m", rows, "csv")
    with pytest.raises(
        ValueError, match=rf"m\.csv line 3, column 'path': path '{bad}' is outside the data root"
    ):
        manifest_dataset(manifest)


def test_outside_root_allowed_when_asked(images: Path, tmp_path: Path):
    outside = tmp_path / "outside.png"
    Image.new("RGB", (6, 4)).save(outside)
    rows = [{"path": "img/0.png", "label": 1}, {"path": str(outside), "label": 1}]
    dataset = manifest_dataset(write(images / "m", rows, "csv"), allow_outside_root=True)
    assert dataset.paths[1] == str(outside)


def test_resolve_item_path_keeps_inside_paths(tmp_path: Path):
    assert resolve_item_path(tmp_path, "a/./b/../c.png") == str(tmp_path / "a" / "c.png")
    with pytest.raises(ValueError, match="outside the data root"):
        resolve_item_path(tmp_path, "..")


def test_unreadable_manifest_images_are_skipped_and_counted(images: Path):
    (images / "img" / "broken.png").write_bytes(b"nope")
    rows = [{"path": f"img/{i}.png", "label": i // 2} for i in range(4)]
    rows += [{"path": "img/broken.png", "label": 0}, {"path": "img/missing.png", "label": 1}]
    manifest = write(images / "m", rows, "jsonl")
    with pytest.warns(SkippedItemsWarning, match=r"2 of 6 items could not be read"):
        dataset = manifest_dataset(manifest)
    assert len(dataset) == 4 and dataset.num_skipped == 2
    assert {Path(s.path).name for s in dataset.skipped} == {"broken.png", "missing.png"}
    with pytest.raises(ValueError, match="strict=True"):
        manifest_dataset(manifest, strict=True)


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_text_triplets(tmp_path: Path, fmt: str):
    rows = [
        {"anchor": "q1", "positive": "p1", "negative": "n1"},
        {"anchor": "q2", "positive": "p2", "negative": "n2"},
    ]
    dataset = TripletManifestDataset(write(tmp_path / "t", rows, fmt), content="text")
    assert len(dataset) == 2
    assert dataset[1] == {"anchor": "q2", "positive": "p2", "negative": "n2"}
    batch = next(iter(torch.utils.data.DataLoader(dataset, batch_size=2)))
    assert batch["negative"] == ["n1", "n2"]


def test_image_triplets_with_a_skipped_row(images: Path):
    (images / "img" / "broken.png").write_bytes(b"nope")
    rows = [
        {"anchor": "img/0.png", "positive": "img/1.png", "negative": "img/2.png", "label": "red"},
        {
            "anchor": "img/2.png",
            "positive": "img/3.png",
            "negative": "img/broken.png",
            "label": "green",
        },
        {"anchor": "img/3.png", "positive": "img/2.png", "negative": "img/0.png", "label": "green"},
    ]
    manifest = write(images / "t", rows, "csv")
    with pytest.warns(
        SkippedItemsWarning,
        match=r"1 of 3 items could not be read: line 3 \(negative .*broken\.png",
    ):
        dataset = TripletManifestDataset(manifest, content="path", transform=transforms.ToFloat())
    assert len(dataset) == 2 and dataset.num_skipped == 1
    item = dataset[1]
    assert set(item) == {"anchor", "positive", "negative", "label"}
    assert item["anchor"].shape == (3, 4, 6) and dataset.classes[item["label"]] == "green"
    assert dataset.labels.tolist() == [1, 0]
    assert float(item["negative"][0, 0, 0]) == 1.0  # img/0.png is red
    batch = next(iter(torch.utils.data.DataLoader(dataset, batch_size=2)))
    assert batch["positive"].shape == (2, 3, 4, 6)


def test_triplet_paths_are_checked_against_the_root(images: Path):
    rows = [{"anchor": "img/0.png", "positive": "/etc/passwd", "negative": "img/2.png"}]
    with pytest.raises(ValueError, match="column 'positive': path '/etc/passwd' is outside"):
        TripletManifestDataset(write(images / "t", rows, "csv"), content="path")


def test_triplet_manifest_errors(tmp_path: Path):
    rows = [{"anchor": "a", "positive": "b"}]
    with pytest.raises(
        ValueError,
        match=r"has no column 'negative' .* expected columns 'anchor', 'positive', 'negative'",
    ):
        TripletManifestDataset(write(tmp_path / "t", rows, "csv"), content="text")
    with pytest.raises(ValueError, match="unknown content 'image'"):
        TripletManifestDataset(write(tmp_path / "t", rows, "csv"), content="image")
    rows = [{"anchor": "a", "positive": "", "negative": "c"}]
    with pytest.raises(ValueError, match="column 'positive' has 1 missing values"):
        TripletManifestDataset(write(tmp_path / "t", rows, "csv"), content="text")


def test_pairs_with_custom_columns_and_labels(tmp_path: Path):
    rows = [
        {"question": "what is a boot", "chunk": "a boot is footwear", "label": 7},
        {"question": "what is a cap", "chunk": "a cap is a hat", "label": 8},
    ]
    dataset = PairManifestDataset(
        write(tmp_path / "p", rows, "jsonl"), content="text", columns=("question", "chunk")
    )
    assert dataset[0] == {"query": "what is a boot", "positive": "a boot is footwear", "label": 0}
    assert dataset.classes == [7, 8]
    with pytest.raises(ValueError, match="columns must name 2 columns"):
        PairManifestDataset(tmp_path / "p.jsonl", content="text", columns=("question",))


def test_image_pairs_runtime_failure_replaced_by_next_row(images: Path):
    import io

    noise = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format="JPEG")
    (images / "img" / "cut.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    rows = [
        {"query": "img/cut.jpg", "positive": "img/0.png"},
        {"query": "img/1.png", "positive": "img/2.png"},
    ]
    dataset = PairManifestDataset(write(images / "p", rows, "csv"), content="path")
    with pytest.warns(SkippedItemsWarning, match="could not read line 2"):
        item = dataset[0]
    assert torch.equal(item["query"], dataset[1]["query"])
    assert dataset.num_skipped == 1 and dataset.skipped[0].path == "line 2"
