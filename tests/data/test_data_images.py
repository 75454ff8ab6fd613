"""Image files and folders: decoding, labels, unreadable files skipped and counted, workers."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tripletkit.data import (
    ImageFileDataset,
    ImageFolderDataset,
    PKSampler,
    SkippedItemsWarning,
    decode_image,
    transforms,
)


def save_image(path: Path, color: tuple[int, int, int], size=(12, 10), fmt=None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, format=fmt)


def truncated_jpeg(path: Path) -> None:
    """A JPEG whose header is intact but whose data stops halfway: opens, fails to decode."""
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format="JPEG", quality=95)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    save_image(root / "sneaker" / "a.png", (255, 0, 0))
    save_image(root / "sneaker" / "b.jpg", (250, 0, 0))
    save_image(root / "sneaker" / "nested" / "c.webp", (245, 0, 0), fmt="WEBP")
    save_image(root / "bag" / "a.PNG", (0, 0, 255))
    save_image(root / "bag" / "b.png", (0, 0, 250))
    return root


def test_decode_image_modes(tmp_path: Path):
    save_image(tmp_path / "x.png", (10, 20, 30), size=(7, 5))
    rgb = decode_image(tmp_path / "x.png")
    assert rgb.shape == (3, 5, 7) and rgb.dtype == torch.uint8
    assert rgb[:, 2, 3].tolist() == [10, 20, 30]
    grey = decode_image(tmp_path / "x.png", mode="L")
    # Pillow's luma: (299 R + 587 G + 114 B) / 1000, rounded.
    assert grey.shape == (1, 5, 7) and int(grey[0, 0, 0]) == round((2990 + 11740 + 3420) / 1000)


def test_decode_image_applies_exif_rotation(tmp_path: Path):
    image = Image.new("RGB", (8, 4), (0, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    image.save(tmp_path / "r.jpg", exif=exif)
    assert decode_image(tmp_path / "r.jpg").shape == (3, 8, 4)


def test_folder_classes_labels_and_items(folder: Path):
    dataset = ImageFolderDataset(folder)
    assert dataset.classes == ["bag", "sneaker"]
    assert dataset.labels.dtype == np.int64
    assert dataset.labels.tolist() == [0, 0, 1, 1, 1]
    names = [Path(p).name for p in dataset.paths]
    assert names == ["a.PNG", "b.png", "a.png", "b.jpg", "c.webp"]
    image, label = dataset[4]
    assert image.shape == (3, 10, 12) and label == 1
    assert int(image[0, 0, 0]) > 200 and int(image[2, 0, 0]) < 20
    assert dataset.num_skipped == 0 and dataset.skipped == []


def test_folder_ignores_non_images_with_a_warning(folder: Path):
    (folder / "sneaker" / "notes.txt").write_text("not an image")
    (folder / "README.md").write_text("readme")
    (folder / "bag" / ".DS_Store").write_bytes(b"\0")
    with pytest.warns(SkippedItemsWarning, match="2 files are not images of a class folder"):
        dataset = ImageFolderDataset(folder)
    assert sorted(Path(p).name for p in dataset.ignored_files) == ["README.md", "notes.txt"]
    assert len(dataset) == 5


def test_unreadable_files_are_skipped_counted_and_named(folder: Path):
    (folder / "bag" / "broken.jpg").write_bytes(b"this is not a jpeg")
    (folder / "bag" / "empty.png").write_bytes(b"")
    with pytest.warns(SkippedItemsWarning, match=r"2 of 7 items could not be read: .*broken\.jpg"):
        dataset = ImageFolderDataset(folder)
    assert len(dataset) == 5
    assert dataset.num_skipped == 2
    assert sorted(Path(item.path).name for item in dataset.skipped) == ["broken.jpg", "empty.png"]
    assert "skipped 2 of 7 items" in dataset.skip_summary()


def test_strict_makes_unreadable_files_an_error(folder: Path):
    (folder / "bag" / "broken.jpg").write_bytes(b"garbage")
    with pytest.raises(
        ValueError, match=r"1 of 6 items could not be read.*broken\.jpg.*strict=True"
    ):
        ImageFolderDataset(folder, strict=True)


def test_truncated_file_is_replaced_by_same_class_item_and_recorded(folder: Path):
    truncated_jpeg(folder / "bag" / "c_truncated.jpg")
    dataset = ImageFolderDataset(folder)  # the header opens: not caught at build time
    index = next(i for i, p in enumerate(dataset.paths) if p.endswith("c_truncated.jpg"))
    with pytest.warns(SkippedItemsWarning, match="could not read .*c_truncated.jpg"):
        image, label = dataset[index]
    assert dataset.classes[label] == "bag"
    assert image.shape == (3, 10, 12)  # a real bag image took its place
    assert dataset.num_skipped == 1
    # Drawn again, it is replaced without another attempt (and without another warning).
    dataset[index]
    assert dataset.num_skipped == 1
    with pytest.raises(ValueError, match="strict=True"):
        ImageFolderDataset(folder, strict=True)[index]


def test_full_check_catches_truncated_files_at_build_time(folder: Path):
    truncated_jpeg(folder / "bag" / "c_truncated.jpg")
    with pytest.warns(SkippedItemsWarning, match="1 of 6 items"):
        dataset = ImageFolderDataset(folder, check="full")
    assert len(dataset) == 5


def test_failures_in_dataloader_workers_reach_the_main_process(folder: Path):
    for i in range(3):
        truncated_jpeg(folder / "bag" / f"t{i}.jpg")
    dataset = ImageFolderDataset(folder, transform=transforms.Resize(8))
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=PKSampler(dataset.labels, p=2, k=5, seed=0), num_workers=2
    )
    with warnings.catch_warnings():
        # Workers report with warnings of their own; what matters is the main process's record.
        warnings.simplefilter("ignore", SkippedItemsWarning)
        batches = list(loader)
    assert all(x.shape == (10, 3, 8, 8) for x, _ in batches)
    assert dataset.num_skipped == 3
    assert sorted(Path(s.path).name for s in dataset.skipped) == ["t0.jpg", "t1.jpg", "t2.jpg"]


def test_class_whose_every_file_fails_is_an_error(tmp_path: Path):
    save_image(tmp_path / "a" / "1.png", (0, 0, 0))
    save_image(tmp_path / "a" / "2.png", (0, 0, 0))
    truncated_jpeg(tmp_path / "b" / "1.jpg")
    dataset = ImageFolderDataset(tmp_path)
    with (
        pytest.warns(SkippedItemsWarning),
        pytest.raises(ValueError, match="every image of class 'b' failed"),
    ):
        dataset[2]


def test_folder_errors_are_explained(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ImageFolderDataset(tmp_path / "missing")
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(ValueError, match="has no image files"):
        ImageFolderDataset(tmp_path)
    save_image(tmp_path / "x" / "1.png", (0, 0, 0))
    save_image(tmp_path / "y" / "1.png", (0, 0, 0))
    with pytest.raises(ValueError, match="distinct labels value, so no positive pair"):
        ImageFolderDataset(tmp_path)
    assert len(ImageFolderDataset(tmp_path, require_positives=False)) == 2


def test_seeded_augmentation_is_reproducible_per_epoch(tmp_path: Path):
    noise = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "noise.png")
    augment = transforms.Compose([transforms.RandomResizedCrop(6), transforms.ToFloat()])
    paths, labels = [tmp_path / "noise.png"] * 2, ["s", "s"]
    a = ImageFileDataset(paths, labels, augment, seed=3)
    b = ImageFileDataset(paths, labels, augment, seed=3)
    assert torch.equal(a[0][0], b[0][0])  # same seed, epoch and index
    assert not torch.equal(a[0][0], a[1][0])  # same file, another index
    b.set_epoch(1)
    assert not torch.equal(a[0][0], b[0][0])


def test_grayscale_mode(folder: Path):
    dataset = ImageFolderDataset(folder, mode="L")
    assert dataset[0][0].shape == (1, 10, 12)


def test_dataset_pickles_with_its_skip_record(folder: Path):
    import pickle

    truncated_jpeg(folder / "bag" / "t.jpg")
    dataset = ImageFolderDataset(folder, transform=transforms.ToFloat())
    restored = pickle.loads(pickle.dumps(dataset))
    assert restored.paths == dataset.paths and restored.classes == dataset.classes
    assert torch.equal(restored[0][0], dataset[0][0])


@pytest.mark.slow
def test_failures_in_spawned_workers_reach_the_main_process(folder: Path):
    for i in range(2):
        truncated_jpeg(folder / "bag" / f"t{i}.jpg")
    dataset = ImageFolderDataset(folder, transform=transforms.Resize(8))
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_sampler=PKSampler(dataset.labels, p=2, k=5, seed=0),
        num_workers=2,
        multiprocessing_context="spawn",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkippedItemsWarning)
        list(loader)
    assert dataset.num_skipped == 2


def test_image_file_dataset_argument_errors(folder: Path):
    paths = [folder / "bag" / "a.PNG", folder / "bag" / "b.png"]
    with pytest.raises(ValueError, match="2 paths but 1 labels"):
        ImageFileDataset(paths, ["bag"])
    with pytest.raises(ValueError, match="unknown check 'deep'"):
        ImageFileDataset(paths, ["bag", "bag"], check="deep")
    with pytest.raises(ValueError, match="no readable images"):
        with pytest.warns(SkippedItemsWarning):
            ImageFileDataset([folder / "nope.png"], ["x"])
