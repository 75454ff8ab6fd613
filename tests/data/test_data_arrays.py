"""In-memory datasets (image arrays, texts, features), labels encoding, feature files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tripletkit.data import (
    FeatureDataset,
    ImageArrayDataset,
    PKSampler,
    TextDataset,
    encode_labels,
    load_features,
    transforms,
)


def test_encode_labels_sorted_contiguous_and_kept():
    ids, classes = encode_labels(["z", "a", "m", "a"])
    assert ids.dtype == np.int64 and ids.tolist() == [2, 0, 1, 0] and classes == ["a", "m", "z"]
    assert [classes[i] for i in ids] == ["z", "a", "m", "a"]
    ids, classes = encode_labels(np.array([10, -3, 10]))
    assert ids.tolist() == [1, 0, 1] and classes == [-3, 10]
    ids, classes = encode_labels([2.0, 1, 2])
    assert classes == [1, 2] and ids.tolist() == [1, 0, 1]
    with pytest.raises(ValueError, match=r"2 missing values .* at positions 1, 2"):
        encode_labels(["a", None, ""])


def test_image_array_items_and_batched_fetch_agree():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (20, 9, 7), dtype=np.uint8)
    labels = np.repeat(np.arange(5), 4)
    transform = transforms.Compose([transforms.ToFloat(), transforms.Normalize(0.5, 0.25)])
    dataset = ImageArrayDataset(images, labels, transform)
    single = [dataset[i] for i in [3, 17, 0]]
    batched = dataset.__getitems__([3, 17, 0])
    for (x1, y1), (x2, y2) in zip(single, batched, strict=True):
        assert torch.equal(x1, x2) and y1 == y2
    x, y = single[1]
    expected = (torch.from_numpy(images[17]).double() / 255 - 0.5) / 0.25
    torch.testing.assert_close(x[0].double(), expected, rtol=1e-6, atol=1e-6)
    assert y == 4


def test_image_array_with_pk_sampler_and_workers():
    images = np.random.default_rng(0).integers(0, 256, (60, 8, 8), dtype=np.uint8)
    labels = np.repeat(np.arange(6), 10)
    augment = transforms.Compose(
        [
            transforms.RandomResizedCrop(8, scale=(0.6, 1.0)),
            transforms.RandomHorizontalFlip(),
            transforms.ToFloat(),
        ]
    )
    dataset = ImageArrayDataset(images, labels, augment, seed=0)
    sampler = PKSampler(dataset.labels, p=3, k=4, seed=0)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=2)
    batches = list(loader)
    assert len(batches) == len(sampler)
    for x, y in batches:
        assert x.shape == (12, 1, 8, 8) and x.dtype == torch.float32
        assert sorted(np.bincount(y.numpy()).tolist())[-3:] == [4, 4, 4]
    # Seeded per (seed, epoch, batch): the same epoch again gives the same augmented batches,
    # whatever the number of workers.
    sampler.set_epoch(0)
    again = list(torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=0))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches, again, strict=True))


def test_image_array_shapes_and_errors():
    rgb = np.zeros((4, 5, 6, 3), dtype=np.uint8)
    assert ImageArrayDataset(rgb, [0, 0, 1, 1], channels_last=True)[0][0].shape == (3, 5, 6)
    assert ImageArrayDataset(np.zeros((4, 2, 5, 6), np.uint8), [0, 0, 1, 1])[0][0].shape == (
        2,
        5,
        6,
    )
    with pytest.raises(ValueError, match="expected uint8"):
        ImageArrayDataset(np.zeros((4, 5, 6)), [0, 0, 1, 1])
    with pytest.raises(ValueError, match="4 items but 3 labels"):
        ImageArrayDataset(np.zeros((4, 5, 6), np.uint8), [0, 0, 1])
    with pytest.raises(ValueError, match=r"labels range 0\.\.3 but there are 2 classes"):
        ImageArrayDataset(np.zeros((4, 5, 6), np.uint8), [0, 0, 3, 3], classes=["a", "b"])
    with pytest.raises(ValueError, match="distinct label value"):
        ImageArrayDataset(np.zeros((3, 5, 6), np.uint8), [0, 1, 2])


def test_plain_callable_transform_falls_back_to_items():
    dataset = ImageArrayDataset(
        np.zeros((4, 2, 2), np.uint8), [0, 0, 1, 1], lambda x: x.float() + 1
    )
    out = dataset.__getitems__([0, 2])
    assert [float(x.sum()) for x, _ in out] == [4.0, 4.0]


def test_text_dataset():
    dataset = TextDataset(["a", "b", "c"], ["x", "y", "x"])
    assert dataset.labels.tolist() == [0, 1, 0] and dataset[2] == ("c", 0)
    assert dataset.num_skipped == 0 and dataset.skipped == []
    with pytest.raises(ValueError, match="texts is empty"):
        TextDataset([], [])


def test_feature_dataset_and_errors():
    features = np.arange(12, dtype=np.float64).reshape(4, 3)
    dataset = FeatureDataset(features, ["b", "a", "b", "a"])
    x, y = dataset[2]
    assert x.dtype == torch.float32 and x.tolist() == [6.0, 7.0, 8.0] and y == 1
    assert [int(y) for _, y in dataset.__getitems__([0, 1])] == [1, 0]
    bad = features.copy()
    bad[1, 2] = np.nan
    bad[3, 0] = np.inf
    with pytest.raises(ValueError, match=r"2 of 4 rows contain NaN or Inf \(rows 1, 3\)"):
        FeatureDataset(bad, [0, 0, 1, 1])
    with pytest.raises(ValueError, match="expected a non-empty 2-D array"):
        FeatureDataset(np.zeros(4), [0, 0, 1, 1])


def test_load_features_npy(tmp_path: Path):
    np.save(tmp_path / "x.npy", np.ones((4, 3), np.float32))
    np.save(tmp_path / "y.npy", np.array([3, 3, 5, 5]))
    dataset = load_features(tmp_path / "x.npy", tmp_path / "y.npy")
    assert dataset.classes == [3, 5] and dataset.features.shape == (4, 3)
    assert load_features(tmp_path / "x.npy", ["a", "a", "b", "b"]).classes == ["a", "b"]
    with pytest.raises(ValueError, match="pass labels"):
        load_features(tmp_path / "x.npy")
    with pytest.raises(FileNotFoundError, match="label file"):
        load_features(tmp_path / "x.npy", tmp_path / "nope.npy")
    with pytest.raises(ValueError, match=r"expected \.npy or \.parquet"):
        load_features(_touch(tmp_path / "x.csv"), None)


def _touch(path: Path) -> Path:
    path.write_text("")
    return path


def test_load_features_parquet(tmp_path: Path):
    pa = pytest.importorskip("pyarrow", reason="Parquet needs pyarrow (tripletkit[data])")
    import pyarrow.parquet as pq

    table = pa.table(
        {"label": ["a", "a", "b", "b"], "f0": [1.0, 2.0, 3.0, 4.0], "f1": [0.0, 0, 1, 1]}
    )
    pq.write_table(table, tmp_path / "cols.parquet")
    dataset = load_features(tmp_path / "cols.parquet")
    assert dataset.features.tolist()[2] == [3.0, 1.0] and dataset.classes == ["a", "b"]
    vectors = pa.table(
        {"embedding": [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0]], "label": [0, 0, 1, 1]}
    )
    pq.write_table(vectors, tmp_path / "vec.parquet")
    assert load_features(tmp_path / "vec.parquet").features[3].tolist() == [7.0, 8.0]
    with pytest.raises(ValueError, match=r"has no column 'y'"):
        load_features(tmp_path / "vec.parquet", label_column="y")
    missing = pa.table({"label": [0, None, 1, 1], "f": [1.0, 2, 3, 4]})
    pq.write_table(missing, tmp_path / "missing.parquet")
    with pytest.raises(ValueError, match=r"column 'label' has 1 missing values .* at row 1"):
        load_features(tmp_path / "missing.parquet")


def test_load_features_without_labels_when_they_are_optional(tmp_path: Path):
    pa = pytest.importorskip("pyarrow", reason="Parquet needs pyarrow (tripletkit[data])")
    import pyarrow.parquet as pq

    features = np.arange(12, dtype=np.float32).reshape(4, 3)
    np.save(tmp_path / "x.npy", features)
    pq.write_table(pa.table({"embedding": features.tolist()}), tmp_path / "x.parquet")
    for name in ("x.npy", "x.parquet"):
        with pytest.raises(ValueError, match="label"):
            load_features(tmp_path / name)  # required unless said otherwise
        dataset = load_features(tmp_path / name, require_labels=False)
        assert dataset.labels is None and dataset.classes is None and len(dataset) == 4
        np.testing.assert_array_equal(dataset.features.numpy(), features)
        x, _ = next(iter(torch.utils.data.DataLoader(dataset, batch_size=4)))
        np.testing.assert_array_equal(x.numpy(), features)
    # With labels present, require_labels=False still reads them.
    np.save(tmp_path / "y.npy", np.array([1, 1, 2, 2]))
    labelled = load_features(tmp_path / "x.npy", tmp_path / "y.npy", require_labels=False)
    assert labelled.labels.tolist() == [0, 0, 1, 1]


@pytest.mark.parametrize("seeded", [False, True])
@pytest.mark.parametrize("augment", [False, True])
def test_collate_items_gives_what_default_collation_of_the_items_gives(seeded, augment):
    from tripletkit.data import ItemBatch, collate_items

    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (30, 10, 10), dtype=np.uint8)
    labels = np.repeat(np.arange(6), 5)[rng.permutation(30)]
    steps = [transforms.ToFloat(), transforms.Normalize(0.3, 0.2)]
    if augment:
        steps = [transforms.RandomResizedCrop(10, scale=(0.5, 1.0)), *steps]
    dataset = ImageArrayDataset(
        images, labels, transforms.Compose(steps), seed=0 if seeded else None
    )
    indices = [7, 0, 29, 3, 3]  # a duplicate too
    torch.manual_seed(0)
    batch = dataset.__getitems__(indices)
    assert isinstance(batch, ItemBatch) and len(batch) == 5
    items = list(batch)  # the items one by one, as torch's default collation sees them
    x, y = collate_items(batch)
    x_ref, y_ref = torch.utils.data.default_collate(items)
    assert torch.equal(x, x_ref) and x.is_contiguous()
    assert torch.equal(y, y_ref) and y.dtype == y_ref.dtype == torch.int64
    assert y.tolist() == [int(labels[i]) for i in indices]
    assert [int(label) for _, label in batch[1:3]] == [int(labels[0]), int(labels[29])]
    if not augment:  # deterministic transforms: each item is what indexing the dataset gives
        for (a, la), i in zip(items, indices, strict=True):
            b, lb = dataset[i]
            assert torch.equal(a, b) and la == lb
    # Anything else still goes through torch's default collation.
    x2, y2 = collate_items([dataset[0], dataset[1]])
    assert x2.shape == (2, 1, 10, 10) and y2.tolist() == [int(labels[0]), int(labels[1])]


def test_feature_batches_collate_to_the_rows():
    from tripletkit.data import collate_items

    features = np.random.default_rng(2).normal(size=(8, 3))
    dataset = FeatureDataset(features, [0, 1, 0, 1, 2, 2, 3, 3])
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=[[5, 1, 2], [7, 0]], collate_fn=collate_items
    )
    (x1, y1), (x2, y2) = list(loader)
    torch.testing.assert_close(x1, torch.as_tensor(features[[5, 1, 2]], dtype=torch.float32))
    assert y1.tolist() == [2, 1, 0] and y2.tolist() == [3, 0]
    assert x2.shape == (2, 3)


def test_transforms_say_whether_they_draw_random_numbers(monkeypatch):
    from tripletkit.data import arrays

    assert not transforms.draws_randomness(None)
    for fixed in (
        transforms.ToFloat(),
        transforms.Normalize(0.5, 0.5),
        transforms.Resize(4),
        transforms.CenterCrop(2),
    ):
        assert not transforms.draws_randomness(fixed)
    for random in (
        transforms.RandomHorizontalFlip(),
        transforms.RandomResizedCrop(4),
        transforms.ColorJitter(brightness=0.2),
        abs,  # an arbitrary callable might
    ):
        assert transforms.draws_randomness(random)
    fixed = transforms.Compose([transforms.ToFloat(), transforms.Normalize(0.5, 0.5)])
    assert not transforms.draws_randomness(fixed)
    assert transforms.draws_randomness(
        transforms.Compose([transforms.ToFloat(), transforms.RandomHorizontalFlip()])
    )
    # A seeded dataset with fixed transforms seeds no generator for its fetches.
    dataset = ImageArrayDataset(np.zeros((4, 3, 3), np.uint8), [0, 0, 1, 1], fixed, seed=0)

    def refuse(*args):
        raise AssertionError("a generator was seeded for a deterministic transform")

    monkeypatch.setattr(arrays, "augmentation_generator", refuse)
    dataset[1]
    dataset.__getitems__([0, 3])
    flipping = ImageArrayDataset(
        np.zeros((4, 3, 3), np.uint8), [0, 0, 1, 1], transforms.RandomHorizontalFlip(), seed=0
    )
    with pytest.raises(AssertionError, match="generator was seeded"):
        flipping.__getitems__([0, 3])
