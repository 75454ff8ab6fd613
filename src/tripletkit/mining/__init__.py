"""Mining for custom losses, cross-batch memory, and mining across processes.

* :mod:`~tripletkit.mining.miners`: index triplets and pairs that carry the distances they were
  mined from (tripletkit losses reuse them instead of computing the matrix again).
* :mod:`~tripletkit.mining.memory`: :class:`CrossBatchMemory`, a FIFO memory of past embeddings
  that any batch loss mines against (XBM).
* :mod:`~tripletkit.mining.distributed`: :func:`gather_batch` / :func:`gather_with_grad`, so that
  mining under ``torch.distributed`` sees the global batch.
* :mod:`~tripletkit.mining.negatives`: ``mine_hard_negatives``, offline hard negatives for
  (query, positive) text pairs from a corpus through the vector index, with false-negative guards
  and resumable chunks (import it from there: it needs the ``index`` extra).
* :mod:`~tripletkit.mining.lexical`: ``mine_lexical_negatives``, the documents a query names word
  for word (lexical hard negatives, no model needed).
"""

from tripletkit.mining.distributed import GatheredBatch, gather_batch, gather_with_grad
from tripletkit.mining.memory import CrossBatchMemory
from tripletkit.mining.miners import (
    PAIR_MINING,
    TRIPLET_MINING,
    DistanceWeightedMiner,
    PairMiner,
    TripletMiner,
    mine_distance_weighted,
    mine_pairs,
    mine_triplets,
)

__all__ = [
    "PAIR_MINING",
    "TRIPLET_MINING",
    "CrossBatchMemory",
    "DistanceWeightedMiner",
    "GatheredBatch",
    "PairMiner",
    "TripletMiner",
    "gather_batch",
    "gather_with_grad",
    "mine_distance_weighted",
    "mine_pairs",
    "mine_triplets",
]
