"""Evaluation of embeddings: retrieval, verification, re-identification, text retrieval, clustering.

Every protocol ranks with the same exact, memory-bounded search (:mod:`.search`: tiles of
distances from :mod:`tripletkit.distances`, never an ``N × M`` matrix) and the same tie rule (the
lower reference index first). One ``evaluate_*`` function per protocol returns a result object
whose ``metrics`` is a flat ``{name: float}`` dict, with the curves and per-class or per-query
values beside it:

* :func:`evaluate_retrieval` / :func:`retrieval_metrics`: precision@1, Recall@K, R-precision,
  MAP@R, mAP, MRR;
* :func:`evaluate_verification` (and :func:`evaluate_verification_from_labels`): ROC, AUC, EER,
  TAR@FAR, LFW 10-fold accuracy; :func:`suggest_threshold` for deployment;
* :func:`evaluate_reid`: CMC, mAP, mINP with the Market-1501 gallery rule;
* :func:`evaluate_text_retrieval`: Recall@k, MRR@10, nDCG@10 from qrels;
* :func:`evaluate_clustering`: NMI and AMI of k-means clusters;
* :func:`hubness_offsets`: a per-reference correction (CSLS over a bank of known queries) that
  keeps hub references from crowding the top of every ranking (the searches take it as offsets),
  and :func:`k_occurrence_skewness` to measure how much hubness there is.

>>> import torch
>>> from tripletkit.evaluation import retrieval_metrics
>>> x = torch.tensor([[0.0, 1.0], [0.1, 1.0], [1.0, 0.0], [1.0, 0.2]])
>>> retrieval_metrics(x, [0, 0, 1, 1])["precision_at_1"]
1.0
"""

from tripletkit.evaluation.clustering import (
    KMeansResult,
    adjusted_mutual_information,
    evaluate_clustering,
    kmeans,
    normalized_mutual_information,
)
from tripletkit.evaluation.hubness import hubness_offsets, k_occurrence_skewness
from tripletkit.evaluation.reid import ReidEvaluation, evaluate_reid
from tripletkit.evaluation.retrieval import (
    RetrievalEvaluation,
    evaluate_retrieval,
    retrieval_metrics,
)
from tripletkit.evaluation.search import Neighbours, knn
from tripletkit.evaluation.text import (
    TextRetrievalEvaluation,
    evaluate_text_retrieval,
    text_ranking_metrics,
)
from tripletkit.evaluation.verification import (
    LfwAccuracy,
    RocCurve,
    Threshold,
    VerificationEvaluation,
    equal_error_rate,
    evaluate_verification,
    evaluate_verification_from_labels,
    lfw_accuracy,
    roc_curve,
    sample_verification_pairs,
    suggest_threshold,
    tar_at_far,
)

__all__ = [
    "KMeansResult",
    "LfwAccuracy",
    "Neighbours",
    "ReidEvaluation",
    "RetrievalEvaluation",
    "RocCurve",
    "TextRetrievalEvaluation",
    "Threshold",
    "VerificationEvaluation",
    "adjusted_mutual_information",
    "equal_error_rate",
    "evaluate_clustering",
    "evaluate_reid",
    "evaluate_retrieval",
    "evaluate_text_retrieval",
    "evaluate_verification",
    "evaluate_verification_from_labels",
    "hubness_offsets",
    "k_occurrence_skewness",
    "kmeans",
    "knn",
    "lfw_accuracy",
    "normalized_mutual_information",
    "retrieval_metrics",
    "roc_curve",
    "sample_verification_pairs",
    "suggest_threshold",
    "tar_at_far",
    "text_ranking_metrics",
]
