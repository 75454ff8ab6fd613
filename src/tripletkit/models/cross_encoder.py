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

import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from tripletkit.files import sha256_of_file, write_atomic
from tripletkit.models.text import TextEncoderBackbone
from tripletkit.validation import check_texts

__all__ = ["CrossEncoder"]

#: The files :meth:`CrossEncoder.save` writes.
WEIGHTS_FILE = "cross_encoder.safetensors"
CONFIG_FILE = "cross_encoder.json"
FORMAT = "tripletkit-cross-encoder"
FORMAT_VERSION = 1


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
        self.model_path = None if model_path is None else str(model_path)
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
        config = getattr(model, "config", None)
        if isinstance(config, dict) and "model_path" in config:
            source = config["model_path"]  # None: the bundled model, wherever it is installed
        else:
            source = backbone.tokenizer.name_or_path
        reranker = cls(source, pretrained=False, max_length=max_length)
        reranker.encoder.transformer.load_state_dict(backbone.transformer.state_dict())
        return reranker

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write the weights (``cross_encoder.safetensors``) and what rebuilds the model
        (``cross_encoder.json``: the model directory, ``max_length``, the weights' SHA-256) to
        ``directory``, each file atomically; :meth:`load` reads them back."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        weights = directory / WEIGHTS_FILE
        write_atomic(weights, lambda tmp: save_file(tensors, str(tmp), metadata={"format": "pt"}))
        document = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "model_path": self.model_path,
            "max_length": self.encoder.input_spec.max_length,
            "weights_sha256": sha256_of_file(weights),
        }
        text = json.dumps(document, indent=2, sort_keys=True) + "\n"
        write_atomic(directory / CONFIG_FILE, lambda tmp: tmp.write_text(text, encoding="utf-8"))
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> CrossEncoder:
        """A cross-encoder written by :meth:`save`, in eval mode (its tokenizer is read from the
        saved ``model_path``; ``None`` there is the installed bundled model)."""
        from safetensors.torch import load_file

        config_path = Path(directory) / CONFIG_FILE
        weights = Path(directory) / WEIGHTS_FILE
        if not (config_path.is_file() and weights.is_file()):
            raise FileNotFoundError(
                f"{directory} has no {CONFIG_FILE} and {WEIGHTS_FILE}; expected a directory "
                "written by CrossEncoder.save"
            )
        document = json.loads(config_path.read_text(encoding="utf-8"))
        if document.get("format") != FORMAT or document.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{config_path} is not a cross-encoder of format {FORMAT!r} version "
                f"{FORMAT_VERSION}"
            )
        if sha256_of_file(weights) != document.get("weights_sha256"):
            raise ValueError(
                f"{weights} does not match the checksum in {config_path}: the two files come "
                "from different saves"
            )
        model = cls(document["model_path"], pretrained=False, max_length=document["max_length"])
        model.load_state_dict(load_file(str(weights)), strict=True)
        return model.eval()

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
