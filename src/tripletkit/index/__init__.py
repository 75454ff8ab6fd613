"""The vector index: faiss search (exact, HNSW, IVF-PQ) with per-item metadata in SQLite.

Needs the ``index`` extra (``pip install 'tripletkit[index]'``, which installs faiss-cpu).

>>> import torch
>>> from tripletkit.index import VectorIndex
>>> index = VectorIndex.build(torch.eye(4), labels=[0, 0, 1, 1])
>>> index.search(torch.eye(4)[:1], k=1).ids.tolist()
[[0]]
"""

from tripletkit.index.metadata import Record
from tripletkit.index.storage import FORMAT_VERSION
from tripletkit.index.vector_index import INDEX_KINDS, SearchResult, VectorIndex

__all__ = ["FORMAT_VERSION", "INDEX_KINDS", "Record", "SearchResult", "VectorIndex"]
