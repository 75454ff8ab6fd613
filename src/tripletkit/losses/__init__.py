"""Loss modules: thin ``nn.Module`` shells over :mod:`tripletkit.functional` holding the defaults.

Every batch loss is called the same way, ``loss(embeddings, labels, ref_embeddings=None,
ref_labels=None)``, and exposes the statistics of its last call as ``loss.last_stats``.
"""

from tripletkit.losses.registry import create_loss, list_losses, register_loss
from tripletkit.losses.triplet import BatchTripletLoss, TripletMarginLoss

__all__ = [
    "BatchTripletLoss",
    "TripletMarginLoss",
    "create_loss",
    "list_losses",
    "register_loss",
]
