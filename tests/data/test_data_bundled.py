"""Bundled data: digits, Fashion-MNIST (IDX reader), WordNet (parser), class-disjoint splits.

The readers are tested on small files written here, so they are covered without the Debian
packages; the checks against the real packages skip with the install command when they are absent.
"""

from __future__ import annotations

import gzip
import struct
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from tripletkit.data import (
    FASHION_MNIST_CLASSES,
    LEXNAMES,
    DataNotInstalledError,
    class_disjoint_split,
    digits_retrieval_split,
    fashion_mnist_available,
    fashion_mnist_retrieval_split,
    lexname_labels,
    load_digits,
    load_fashion_mnist,
    load_wordnet,
    wordnet_available,
)
from tripletkit.data.bundled import FASHION_MNIST_INSTALL
from tripletkit.data.wordnet import WORDNET_INSTALL, parse_data_line

needs_fashion_mnist = pytest.mark.skipif(
    not fashion_mnist_available(), reason=f"Fashion-MNIST not installed: {FASHION_MNIST_INSTALL}"
)
needs_wordnet = pytest.mark.skipif(
    not wordnet_available(), reason=f"WordNet not installed: {WORDNET_INSTALL}"
)


def test_digits_values_rescaled_and_labels():
    from sklearn.datasets import load_digits as sklearn_digits

    images, labels, classes = load_digits()
    raw = sklearn_digits()
    assert images.shape == (1797, 8, 8) and images.dtype == np.uint8
    assert labels.dtype == np.int64 and labels.tolist() == raw.target.tolist()
    assert np.array_equal(images, np.rint(raw.images * 255 / 16).astype(np.uint8))
    assert images.max() == 255 and classes == tuple("0123456789")


def write_idx(folder: Path, prefix: str, images: np.ndarray, labels: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    n = images.shape[0]
    header = struct.pack(">IIII", 2051, n, 28, 28)
    (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(
        gzip.compress(header + images.tobytes())
    )
    header = struct.pack(">II", 2049, n)
    (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(header + labels.astype(np.uint8).tobytes())
    )


def test_fashion_mnist_idx_reader_on_written_files(tmp_path: Path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8)
    labels = np.array([9, 0, 0, 3, 5, 5, 1])
    write_idx(tmp_path, "t10k", images, labels)
    loaded = load_fashion_mnist("test", root=tmp_path)
    assert np.array_equal(loaded.images, images)
    assert loaded.labels.dtype == np.int64 and loaded.labels.tolist() == labels.tolist()
    assert loaded.classes[loaded.labels[0]] == "Ankle boot"
    loaded.images[0, 0, 0] ^= 1  # returned arrays are the caller's own copies
    assert np.array_equal(load_fashion_mnist("test", root=tmp_path).images, images)


def test_fashion_mnist_missing_or_corrupt_gives_the_install_command(tmp_path: Path, monkeypatch):
    with pytest.raises(DataNotInstalledError, match=r"apt-get install -y dataset-fashion-mnist"):
        load_fashion_mnist("train", root=tmp_path)
    monkeypatch.setenv("TRIPLETKIT_FASHION_MNIST_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_fashion_mnist("train")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\0" * 32))
    (tmp_path / "bad" / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\0" * 16))
    with pytest.raises(ValueError, match="is not a Fashion-MNIST IDX file"):
        load_fashion_mnist("train", root=tmp_path / "bad")
    with pytest.raises(ValueError, match="unknown split 'val'"):
        load_fashion_mnist("val", root=tmp_path)


@needs_fashion_mnist
def test_fashion_mnist_real_files():
    train = load_fashion_mnist("train")
    test = load_fashion_mnist("test")
    assert train.images.shape == (60000, 28, 28) and test.images.shape == (10000, 28, 28)
    assert set(Counter(train.labels.tolist()).values()) == {6000}
    assert set(Counter(test.labels.tolist()).values()) == {1000}
    # The first training image is an ankle boot, the first test image too (published facts).
    assert train.labels[0] == 9 and test.labels[0] == 9
    assert train.classes == FASHION_MNIST_CLASSES


@needs_fashion_mnist
def test_fashion_mnist_standard_split():
    split = fashion_mnist_retrieval_split()
    assert split.train.images.shape == (30000, 28, 28)
    assert split.evaluation.images.shape == (5000, 28, 28)
    assert set(split.train.labels.tolist()) == {0, 1, 2, 3, 4}
    assert set(split.evaluation.labels.tolist()) == {5, 6, 7, 8, 9}


def test_digits_standard_split():
    split = digits_retrieval_split()
    assert set(split.train.labels.tolist()) == {0, 1, 2, 3, 4}
    assert set(split.evaluation.labels.tolist()) == {5, 6, 7, 8, 9}
    assert split.train.images.shape[0] + split.evaluation.images.shape[0] == 1797


def test_class_disjoint_split_properties():
    labels = np.random.default_rng(0).integers(0, 12, 500)
    train, test = class_disjoint_split(labels, train_classes=[0, 3, 11])
    assert set(labels[train].tolist()) == {0, 3, 11}
    assert not set(labels[test].tolist()) & {0, 3, 11}
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(500))
    a = class_disjoint_split(labels, train_classes=5, seed=1)
    b = class_disjoint_split(labels, train_classes=5, seed=1)
    assert np.array_equal(a.train, b.train) and len(set(labels[a.train].tolist())) == 5
    strings = class_disjoint_split(["cat", "dog", "cat", "owl"], train_classes=["cat"])
    assert strings.train.tolist() == [0, 2] and strings.test.tolist() == [1, 3]


def test_class_disjoint_split_errors():
    with pytest.raises(ValueError, match=r"train_classes \[7\] do not occur"):
        class_disjoint_split([0, 1, 2], train_classes=[7])
    with pytest.raises(ValueError, match="leave one side empty"):
        class_disjoint_split([0, 1, 2], train_classes=[0, 1, 2])
    with pytest.raises(ValueError, match=r"expected a number in 1\.\.2"):
        class_disjoint_split([0, 1, 2], train_classes=3)


WORDNET_SAMPLE = {
    "noun": [
        "  1 This software and database is being provided to you, the LICENSEE, by  \n",
        "00001740 03 n 01 entity 0 003 ~ 00001930 n 0000 | that which is perceived or known  \n",
        "02084071 05 n 03 dog 0 domestic_dog 0 Canis_familiaris 0 001 @ 02083346 n 0000 | a member "
        'of the genus Canis; "the dog barked all night"  \n',
    ],
    "verb": [
        "01835496 38 v 01 run 0 001 @ 01831531 v 0000 01 + 02 00 | move fast by using one's feet; "
        '"Don\'t run--you\'ll be out of breath"; "The children ran to the store"  \n',
    ],
    "adj": [
        "00014358 00 s 02 abounding 0 galore(ip) 0 001 & 00013887 a 0000 | existing in abundance; "
        '"abounding confidence"; "whiskey galore"  \n',
        "00020103 00 s 02 outback(a) 0 remote 0 001 & 00019874 a 0000 | inaccessible and sparsely "
        "populated;  \n",
    ],
    "adv": ["00001740 02 r 01 a_cappella 0 000 | without musical accompaniment  \n"],
}


@pytest.fixture
def wordnet_dir(tmp_path: Path) -> Path:
    for pos, lines in WORDNET_SAMPLE.items():
        (tmp_path / f"data.{pos}").write_text("".join(lines))
    return tmp_path


def test_wordnet_parser_on_written_files(wordnet_dir: Path):
    synsets = load_wordnet(root=wordnet_dir)
    assert [s.key for s in synsets] == [
        "00001740-n",
        "02084071-n",
        "01835496-v",
        "00014358-s",
        "00020103-s",
        "00001740-r",
    ]
    dog = synsets[1]
    assert dog.lexname == "noun.animal" and dog.lemmas == (
        "dog",
        "domestic_dog",
        "Canis_familiaris",
    )
    assert dog.document == "dog, domestic dog, Canis familiaris"
    assert dog.definition == "a member of the genus Canis"
    assert dog.examples == ("the dog barked all night",)
    run = synsets[2]
    assert run.lexname == "verb.motion" and run.definition == "move fast by using one's feet"
    assert run.examples == ("Don't run--you'll be out of breath", "The children ran to the store")
    assert synsets[3].document == "abounding, galore"
    assert synsets[4].document == "outback, remote" and synsets[4].examples == ()
    assert synsets[4].definition == "inaccessible and sparsely populated"
    assert synsets[5].document == "a cappella" and synsets[5].lexname == "adv.all"
    assert lexname_labels(synsets).tolist() == [3, 5, 38, 0, 0, 2]
    assert [s.key for s in load_wordnet(["adv", "noun"], root=wordnet_dir)] == [
        "00001740-r",
        "00001740-n",
        "02084071-n",
    ]


def test_wordnet_errors(tmp_path: Path, wordnet_dir: Path):
    with pytest.raises(DataNotInstalledError, match="apt-get install -y wordnet-base"):
        load_wordnet(root=tmp_path / "empty")
    with pytest.raises(ValueError, match="unknown pos"):
        load_wordnet(["nouns"], root=wordnet_dir)
    with pytest.raises(ValueError, match="not a WordNet data line"):
        parse_data_line("garbage")


def test_lexnames_are_the_45_standard_files():
    assert len(LEXNAMES) == 45 and len(set(LEXNAMES)) == 45
    assert LEXNAMES[3] == "noun.Tops" and LEXNAMES[29] == "verb.body" and LEXNAMES[44] == "adj.ppl"


@needs_wordnet
def test_wordnet_real_files_match_the_published_counts():
    synsets = load_wordnet()
    assert len(synsets) == 117_659
    assert len({s.lexname_id for s in synsets}) == 45
    assert sum(len(s.lemmas) >= 2 for s in synsets) == 53_811
    assert sum(bool(s.examples) for s in synsets) == 32_884
    # Order: noun, verb, adj, adv files, each in file order (offsets ascend within a file).
    pos_order = [s.pos for s in synsets]
    first = {p: pos_order.index(p) for p in ("n", "v", "a", "r")}
    assert first["n"] < first["v"] < first["a"] < first["r"]
    nouns = [s.offset for s in synsets if s.pos == "n"]
    assert nouns == sorted(nouns)
    assert all(
        s.lexname.startswith({"n": "noun", "v": "verb", "r": "adv"}.get(s.pos, "adj"))
        for s in synsets
    )
    assert not any("_" in w or w.endswith(("(a)", "(p)", "(ip)")) for s in synsets for w in s.words)


@needs_fashion_mnist
def test_pk_epoch_over_the_standard_fashion_mnist_split():
    from tripletkit.data import PKSampler

    labels = fashion_mnist_retrieval_split().train.labels
    sampler = PKSampler(labels, p=5, k=32, seed=0)
    batches = sampler.batches(0)
    # 6,000 items per class -> ceil(6000 / 32) = 188 groups per class, one per batch.
    assert len(batches) == 188
    drawn = np.bincount(np.concatenate(batches), minlength=labels.shape[0])
    assert drawn.min() == 1 and drawn.sum() == 188 * 160
    assert all(sorted(np.bincount(labels[b]).tolist())[-5:] == [32] * 5 for b in batches)
