"""A cross-encoder: one transformer reads a query and a document together and scores the pair.

A bi-encoder (:func:`~tripletkit.models.text.text_encoder`) embeds queries and documents apart,
which is what makes a corpus searchable; a cross-encoder sees both texts in one sequence,
``[CLS] query [SEP] document [SEP]``, so every query token attends to every document token. It
is far too slow to score a whole corpus, and it is used to re-order the few top candidates the
bi-encoder found (:mod:`tripletkit.evaluation.rerank`), trained with
:func:`tripletkit.training.cross_encoder.train_cross_encoder`.

The score is a linear layer on the attention-masked mean of the last hidden states of the pair
sequence: an unbounded real number, larger for a better match.

Needs the ``text`` extra (``transformers``; the bundled all-MiniLM-L6-v2 by default). Only local
files are read.

Example:
    >>> reranker = CrossEncoder()                                      # doctest: +SKIP
    >>> reranker.score(["a domesticated canid"], ["dog, domestic dog"])  # doctest: +SKIP
    tensor([0.0312])
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from tripletkit.models.text import TextEncoderBackbone
from tripletkit.validation import check_texts

__all__ = ["CrossEncoder"]


def _check_pairs(queries: Sequence[str], documents: Sequence[str]) -> tuple[list[str], list[str]]:
    queries = check_texts(queries, "queries")
    documents = check_texts(documents, "documents")
    if len(queries) != len(documents):
        raise ValueError(
            f"queries and documents must pair up; got {len(queries)} queries and "
            f"{len(documents)} documents"
        )
    return queries, documents


class CrossEncoder(nn.Module):
    """Scores ``(query, document)`` pairs with one transformer over both texts.

    Args:
        model_path: a local transformers / sentence-transformers directory; ``None`` for the
            bundled all-MiniLM-L6-v2.
        pretrained: load the directory's weights (otherwise its config with random weights).
        max_length: tokens of the pair sequence; the longer text is truncated first.
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        pretrained: bool = True,
        max_length: int = 128,
    ) -> None:
        super().__init__()
        self.encoder = TextEncoderBackbone(
            model_path, pretrained=pretrained, max_length=max_length, pooling="mean"
        )
        self.head = nn.Linear(self.encoder.feature_dim, 1)

    @classmethod
    def from_text_model(cls, model: nn.Module, *, max_length: int = 128) -> CrossEncoder:
        """A cross-encoder whose transformer starts from a (fine-tuned) text model's weights,
        e.g. the bi-encoder whose candidates it will re-order; the score layer starts fresh.

        ``model`` is a text model of :func:`~tripletkit.models.create_model` (``"text_encoder"``)
        or its backbone; its weights are copied, not shared.
        """
        backbone = getattr(model, "backbone", model)
        if not isinstance(backbone, TextEncoderBackbone):
            raise TypeError(
                "from_text_model needs a text model (create_model('text_encoder') or its "
                f"backbone); got {type(model).__name__}"
            )
        source = Path(backbone.tokenizer.name_or_path)
        reranker = cls(source, pretrained=False, max_length=max_length)
        reranker.encoder.transformer.load_state_dict(backbone.transformer.state_dict())
        return reranker

    def tokenize(self, queries: Sequence[str], documents: Sequence[str]) -> dict[str, torch.Tensor]:
        """Token ids of the pair sequences ``[CLS] q [SEP] d [SEP]``, padded to the longest."""
        queries, documents = _check_pairs(queries, documents)
        encoded = self.encoder.tokenizer(
            queries,
            documents,
            padding=True,
            truncation=True,
            max_length=self.encoder.input_spec.max_length,
            return_tensors="pt",
        )
        return dict(encoded)

    def forward(self, queries: Sequence[str], documents: Sequence[str]) -> torch.Tensor:
        """``(B,)`` scores of the pairs ``(queries[i], documents[i])`` (with gradients)."""
        if len(queries) == 0 and len(documents) == 0:
            return self.head.weight.new_zeros(0)
        pooled = self.encoder(self.tokenize(queries, documents))
        return self.head(pooled).squeeze(-1)

    @torch.no_grad()
    def score(
        self, queries: Sequence[str], documents: Sequence[str], *, batch_size: int = 64
    ) -> torch.Tensor:
        """float32 ``(B,)`` scores on the CPU, in eval mode (no dropout), batched by length.

        Pairs of similar length are scored together (less padding); the order of the result is
        the order of the input. The module's train/eval mode is restored afterwards.
        """
        queries, documents = _check_pairs(queries, documents)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}")
        order = sorted(range(len(queries)), key=lambda i: len(queries[i]) + len(documents[i]))
        scores = torch.empty(len(queries), dtype=torch.float32)
        was_training = self.training
        self.eval()
        try:
            for start in range(0, len(order), batch_size):
                rows = order[start : start + batch_size]
                batch = self([queries[i] for i in rows], [documents[i] for i in rows])
                scores[torch.as_tensor(rows)] = batch.float().cpu()
        finally:
            self.train(was_training)
        return scores
