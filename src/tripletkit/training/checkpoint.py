"""Checkpoints that survive a kill at any instant, and never execute code when loaded.

A checkpoint is ONE safetensors file: every tensor of the run (model weights, optimizer moments,
loss parameters such as proxies, RNG states) plus the JSON state (epoch, step, scheduler and sampler
position, config, metrics) in the file's metadata. It is written to a temporary file in the same
directory, flushed and fsync'ed, then renamed over the previous one (``os.replace``, atomic on
POSIX), and the directory is fsync'ed: after a crash the name holds either the old checkpoint or the
new one, never a torn file. A human-readable copy of the state is written beside it as ``.json``
(informational; loading reads only the safetensors file). No pickle anywhere.

Nested state (an optimizer's ``state_dict()``) is stored by :func:`pack`: tensors go to the tensor
map under dotted keys and are replaced in the JSON tree by ``{"__tensor__": key}``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from tripletkit.files import atomic_write_text, write_atomic

__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointError",
    "atomic_write_text",
    "load_checkpoint",
    "load_optimizer_state",
    "pack",
    "save_checkpoint",
    "unpack",
]

CHECKPOINT_FORMAT = "tripletkit-checkpoint/1"
_STATE_KEY = "tripletkit_state"


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt, or not a tripletkit checkpoint."""


def pack(tree: Any, tensors: dict[str, torch.Tensor], prefix: str) -> Any:
    """Move the tensors of a nested dict/list into ``tensors``; return the JSON-able rest."""
    if isinstance(tree, torch.Tensor):
        key = prefix
        tensors[key] = tree.detach().cpu().contiguous().clone()
        return {"__tensor__": key}
    if isinstance(tree, dict):
        return {
            "__dict__": [
                [pack(k, tensors, f"{prefix}.k{i}"), pack(v, tensors, f"{prefix}.{i}")]
                for i, (k, v) in enumerate(tree.items())
            ]
        }
    if isinstance(tree, (list, tuple)):
        packed = [pack(v, tensors, f"{prefix}.{i}") for i, v in enumerate(tree)]
        return {"__tuple__": packed} if isinstance(tree, tuple) else packed
    if tree is None or isinstance(tree, (bool, int, float, str)):
        return tree
    raise TypeError(f"cannot store a {type(tree).__name__} in a checkpoint (at {prefix})")


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """``optimizer.load_state_dict(state)``, then each per-parameter state tensor laid out in
    memory like its parameter.

    Checkpoints store tensors contiguous, but a parameter may be channels-last (the conv
    backbones' weights are). PyTorch's fused AdamW pairs a parameter's elements with its moments'
    by memory position, so moments loaded contiguous beside a channels-last weight are silently
    updated against the wrong elements, and a resumed run drifts from the uninterrupted one
    (measured: 0.04 after three steps of one conv layer).
    """
    optimizer.load_state_dict(state)
    for group in optimizer.param_groups:
        for param in group["params"]:
            for key, value in optimizer.state.get(param, {}).items():
                if (
                    isinstance(value, torch.Tensor)
                    and value.shape == param.shape
                    and value.stride() != param.stride()
                ):
                    optimizer.state[param][key] = torch.empty_like(param, dtype=value.dtype).copy_(
                        value
                    )


def unpack(tree: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`pack`."""
    if isinstance(tree, dict):
        if "__tensor__" in tree:
            return tensors[tree["__tensor__"]]
        if "__dict__" in tree:
            return {unpack(k, tensors): unpack(v, tensors) for k, v in tree["__dict__"]}
        if "__tuple__" in tree:
            return tuple(unpack(v, tensors) for v in tree["__tuple__"])
        return {k: unpack(v, tensors) for k, v in tree.items()}
    if isinstance(tree, list):
        return [unpack(v, tensors) for v in tree]
    return tree


def save_checkpoint(
    path: str | Path, tensors: dict[str, torch.Tensor], state: dict[str, Any]
) -> None:
    """Write a checkpoint atomically.

    Args:
        path: the ``.safetensors`` file (its ``.json`` twin is written beside it).
        tensors: name → tensor (CPU copies are made).
        state: JSON-serialisable state.
    """
    path = Path(path)
    stored = {name: t.detach().cpu().contiguous() for name, t in tensors.items()}
    # safetensors refuses tensors that share memory; give each its own storage.
    seen: set[int] = set()
    for name, t in stored.items():
        if t.numel() and t.untyped_storage().data_ptr() in seen:
            stored[name] = t.clone()
        elif t.numel():
            seen.add(t.untyped_storage().data_ptr())
    state = {"format": CHECKPOINT_FORMAT, **state}
    metadata = {_STATE_KEY: json.dumps(state)}
    write_atomic(path, lambda temp: save_file(stored, str(temp), metadata=metadata))
    atomic_write_text(path.with_suffix(".json"), json.dumps(state, indent=2) + "\n")


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises:
        CheckpointError: missing, truncated/corrupt, or not a tripletkit checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {str(path)!r}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"checkpoint {str(path)!r} is corrupt or unreadable: {err}") from err
    if _STATE_KEY not in metadata:
        raise CheckpointError(
            f"{str(path)!r} is a safetensors file but not a tripletkit checkpoint"
        )
    try:
        state = json.loads(metadata[_STATE_KEY])
    except json.JSONDecodeError as err:
        raise CheckpointError(f"checkpoint {str(path)!r} has an unreadable state: {err}") from err
    if state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"checkpoint {str(path)!r} has format {state.get('format')!r}; "
            f"this version reads {CHECKPOINT_FORMAT!r}"
        )
    return tensors, state
