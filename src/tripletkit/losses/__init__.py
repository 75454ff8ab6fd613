"""Loss modules: thin ``nn.Module`` shells over :mod:`tripletkit.functional` holding the defaults.

Every batch loss is called the same way, ``loss(embeddings, labels, ref_embeddings=None,
ref_labels=None)``, and exposes the statistics of its last call as ``loss.last_stats``. Losses with
parameters of their own (proxies, a learnable margin boundary) also have ``param_groups(base_lr)``
for the optimiser. ``create_loss(name, **options)`` builds any of them by name.
"""

from tripletkit.losses.contrastive import ContrastiveLoss
from tripletkit.losses.info_nce import InfoNCELoss, MultipleNegativesRankingLoss
from tripletkit.losses.margin import DistanceWeightedMarginLoss
from tripletkit.losses.mined import MinedTripletLoss
from tripletkit.losses.multi_similarity import MultiSimilarityLoss
from tripletkit.losses.proxy import ProxyAnchorLoss, ProxyNCALoss
from tripletkit.losses.quadruplet import QuadrupletLoss
from tripletkit.losses.registry import create_loss, list_losses, register_loss
from tripletkit.losses.triplet import BatchTripletLoss, TripletMarginLoss

__all__ = [
    "BatchTripletLoss",
    "ContrastiveLoss",
    "DistanceWeightedMarginLoss",
    "InfoNCELoss",
    "MinedTripletLoss",
    "MultiSimilarityLoss",
    "MultipleNegativesRankingLoss",
    "ProxyAnchorLoss",
    "ProxyNCALoss",
    "QuadrupletLoss",
    "TripletMarginLoss",
    "create_loss",
    "list_losses",
    "register_loss",
]
