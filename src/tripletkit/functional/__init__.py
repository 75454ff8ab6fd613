"""Pure functions: the losses as tensor-in, tensor-out math (``tripletkit.losses`` wraps them)."""

from tripletkit.functional.batch_triplet import batch_triplet_loss
from tripletkit.functional.contrastive import contrastive_loss, contrastive_pair_loss
from tripletkit.functional.info_nce import info_nce_loss, multiple_negatives_ranking_loss
from tripletkit.functional.margin import distance_weighted_margin_loss, margin_pair_loss
from tripletkit.functional.mined import MinedPairs, MinedTriplets, mined_triplet_loss
from tripletkit.functional.mining_modes import MINING_MODES
from tripletkit.functional.multi_similarity import multi_similarity_loss
from tripletkit.functional.pair_stats import PairStats
from tripletkit.functional.proxy import proxy_anchor_loss, proxy_nca_loss
from tripletkit.functional.quadruplet import QuadrupletStats, quadruplet_loss
from tripletkit.functional.triplet_margin import triplet_margin_loss
from tripletkit.functional.triplet_stats import TripletStats

__all__ = [
    "MINING_MODES",
    "MinedPairs",
    "MinedTriplets",
    "PairStats",
    "QuadrupletStats",
    "TripletStats",
    "batch_triplet_loss",
    "contrastive_loss",
    "contrastive_pair_loss",
    "distance_weighted_margin_loss",
    "info_nce_loss",
    "margin_pair_loss",
    "mined_triplet_loss",
    "multi_similarity_loss",
    "multiple_negatives_ranking_loss",
    "proxy_anchor_loss",
    "proxy_nca_loss",
    "quadruplet_loss",
    "triplet_margin_loss",
]
