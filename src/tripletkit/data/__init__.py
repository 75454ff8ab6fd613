"""Data for triplet training: datasets, bundled real data, transforms and the P×K sampler.

=================================  ===========================================================
what                               where
=================================  ===========================================================
``PKSampler``                      batches of P distinct classes × K items (always triplets)
``ImageFolderDataset``             ``root/<class>/<image>``, jpg/png/webp via Pillow
``manifest_dataset``               CSV/JSONL/Parquet with ``path`` or ``text`` plus ``label``
``UnlabelledDataset``              the same without labels (``require_labels=False``): a corpus
``TripletManifestDataset``         explicit ``anchor``/``positive``/``negative`` rows
``PairManifestDataset``            retrieval ``query``/``positive`` rows
``ImageArrayDataset``              uint8 image arrays in memory (batched fetch and transforms)
``FeatureDataset``                 numeric vectors (``load_features``: ``.npy`` / Parquet)
``TextDataset``                    texts with labels
``load_digits``                    scikit-learn digits, 1,797 × 8×8, 10 classes
``load_fashion_mnist``             Fashion-MNIST (Debian ``dataset-fashion-mnist``)
``load_wordnet``                   WordNet synsets with lexname labels (Debian ``wordnet-base``)
``class_disjoint_split``           train and test on disjoint classes; standard splits
``transforms``                     resize, crops, flip, colour jitter, normalise (no torchvision)
=================================  ===========================================================

Every labelled dataset returns ``(item, label)`` with an int label, and exposes ``labels``
(``(N,)`` int64 numpy array, read without decoding anything) and ``classes`` (the original label
values, ``classes[label]``). Triplet and pair datasets return dicts keyed by role. Datasets that
read files expose ``skipped``, ``num_skipped`` and ``skip_summary()``.

Example:
    >>> import torch
    >>> from tripletkit.data import ImageArrayDataset, PKSampler, load_digits, transforms
    >>> images, labels, classes = load_digits()
    >>> dataset = ImageArrayDataset(images, labels, transforms.ToFloat(), classes=classes)
    >>> sampler = PKSampler(dataset.labels, p=8, k=4, seed=0)
    >>> loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler)
    >>> x, y = next(iter(loader))
    >>> x.shape, len(set(y.tolist()))
    (torch.Size([32, 1, 8, 8]), 8)
"""

from tripletkit.data import transforms
from tripletkit.data.arrays import (
    FeatureDataset,
    ImageArrayDataset,
    ItemBatch,
    TextDataset,
    collate_items,
    load_features,
)
from tripletkit.data.bundled import (
    DIGITS_CLASSES,
    FASHION_MNIST_CLASSES,
    DataNotInstalledError,
    LabelledImages,
    fashion_mnist_available,
    load_digits,
    load_fashion_mnist,
)
from tripletkit.data.images import ImageFileDataset, ImageFolderDataset, decode_image
from tripletkit.data.labels import EncodedLabels, encode_labels
from tripletkit.data.manifests import (
    Manifest,
    PairManifestDataset,
    TripletManifestDataset,
    UnlabelledDataset,
    manifest_dataset,
    read_manifest,
    resolve_item_path,
)
from tripletkit.data.sampler import ExcludedItemsWarning, PKSampler
from tripletkit.data.skipped import SkippedItem, SkippedItemsWarning
from tripletkit.data.splits import (
    DIGITS_EVAL_CLASSES,
    DIGITS_TRAIN_CLASSES,
    FASHION_MNIST_EVAL_CLASSES,
    FASHION_MNIST_TRAIN_CLASSES,
    LabelledSubset,
    RetrievalSplit,
    Split,
    class_disjoint_split,
    digits_retrieval_split,
    fashion_mnist_retrieval_split,
)
from tripletkit.data.wordnet import (
    LEXNAMES,
    Synset,
    lexname_labels,
    load_wordnet,
    wordnet_available,
)

__all__ = [
    "DIGITS_CLASSES",
    "DIGITS_EVAL_CLASSES",
    "DIGITS_TRAIN_CLASSES",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_EVAL_CLASSES",
    "FASHION_MNIST_TRAIN_CLASSES",
    "LEXNAMES",
    "DataNotInstalledError",
    "EncodedLabels",
    "ExcludedItemsWarning",
    "FeatureDataset",
    "ImageArrayDataset",
    "ImageFileDataset",
    "ImageFolderDataset",
    "ItemBatch",
    "LabelledImages",
    "LabelledSubset",
    "Manifest",
    "PKSampler",
    "PairManifestDataset",
    "RetrievalSplit",
    "SkippedItem",
    "SkippedItemsWarning",
    "Split",
    "Synset",
    "TextDataset",
    "TripletManifestDataset",
    "UnlabelledDataset",
    "class_disjoint_split",
    "collate_items",
    "decode_image",
    "digits_retrieval_split",
    "encode_labels",
    "fashion_mnist_available",
    "fashion_mnist_retrieval_split",
    "lexname_labels",
    "load_digits",
    "load_fashion_mnist",
    "load_features",
    "load_wordnet",
    "manifest_dataset",
    "read_manifest",
    "resolve_item_path",
    "transforms",
    "wordnet_available",
]
