"""Pure functions: the losses as tensor-in, tensor-out math (``tripletkit.losses`` wraps them)."""

from tripletkit.functional.batch_triplet import batch_triplet_loss
from tripletkit.functional.mining_modes import MINING_MODES
from tripletkit.functional.triplet_margin import triplet_margin_loss
from tripletkit.functional.triplet_stats import TripletStats

__all__ = ["MINING_MODES", "TripletStats", "batch_triplet_loss", "triplet_margin_loss"]
