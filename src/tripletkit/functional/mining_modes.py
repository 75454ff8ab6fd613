"""The online mining modes of the batch triplet loss, by name and by the code the kernels use.

=====================  =====================================================================  ==========================
mode                   triplets used                                                          loss is the mean over
=====================  =====================================================================  ==========================
``all``                every valid triplet with relu(d_ap - d_an + α) > 0 (batch-all)        those triplets
``hard``               per anchor, its hardest positive and hardest negative (batch-hard)      anchors with both
``semihard``           per positive pair, the closest negative with d_an > d_ap, else the     positive pairs
                       farthest negative (FaceNet / TensorFlow Addons)
``semihard-window``    every triplet with d_ap < d_an < d_ap + α                              those triplets
``hard-window``        every triplet with d_an <= d_ap                                        those triplets
``easy-positive``      per anchor, its easiest (closest) positive and hardest negative        anchors with both
                       (Xuan et al. 2020)
=====================  =====================================================================  ==========================

Ties (equal distances) select the reference with the lowest index.
"""

from __future__ import annotations

__all__ = ["MINING_CODES", "MINING_MODES"]

MINING_MODES: tuple[str, ...] = (
    "all",
    "hard",
    "semihard",
    "semihard-window",
    "hard-window",
    "easy-positive",
)

#: Integer code of each mode, as passed to the kernels.
MINING_CODES: dict[str, int] = {name: code for code, name in enumerate(MINING_MODES)}

ALL, HARD, SEMIHARD, SEMIHARD_WINDOW, HARD_WINDOW, EASY_POSITIVE = range(len(MINING_MODES))
