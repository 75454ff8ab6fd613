"""tripletkit: learn embeddings with triplet loss.

An anchor, a positive (same class) and a negative (different class) are embedded by a network f
so that ``d(f(a), f(p)) + margin < d(f(a), f(n))``. tripletkit mines those triplets exactly and
fast from labelled batches, samples batches that always contain them, and trains, evaluates and
reports on embedding models.

>>> import torch, tripletkit
>>> loss_fn = tripletkit.losses.BatchTripletLoss(margin=0.2, mining="hard")
"""

from tripletkit import distances, functional, losses
from tripletkit.distances import pairwise_distances
from tripletkit.losses import BatchTripletLoss, TripletMarginLoss

__version__ = "0.1.0"

__all__ = [
    "BatchTripletLoss",
    "TripletMarginLoss",
    "__version__",
    "distances",
    "functional",
    "losses",
    "pairwise_distances",
]
