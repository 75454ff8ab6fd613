"""Mixed precision: which precision a run trains in (``train.precision``, ``precision=``).

``"fp32"``, ``"bf16"`` and ``"fp16"`` are taken as given; ``"auto"`` is bfloat16 where the device
computes it in hardware and float32 elsewhere (:func:`resolve_precision`). Weights, optimizer
state and losses stay float32 in every case: only the model's forward pass runs under autocast.
"""

from __future__ import annotations

import torch

__all__ = [
    "FP16_REFUSED_DEVICES",
    "PRECISIONS",
    "autocast",
    "cpu_has_native_bfloat16",
    "resolve_precision",
]

#: The values of ``train.precision``.
PRECISIONS = ("fp32", "bf16", "fp16", "auto")

#: Device types refused float16 training: on CPU float16 autocast is slower than float32 and
#: bfloat16 is the mixed precision to use.
FP16_REFUSED_DEVICES = ("cpu",)


def cpu_has_native_bfloat16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (AVX512-BF16 or AMX), where oneDNN's
    bfloat16 kernels are faster than float32 ones. Elsewhere bfloat16 on CPU is emulated and can
    be slower than float32."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def resolve_precision(precision: str, device: torch.device) -> str:
    """The precision a run trains in: ``precision`` itself, or for ``"auto"`` ``"bf16"`` where
    the device computes bfloat16 natively (a CUDA GPU with bfloat16 arithmetic, Ampere or later,
    not one that only emulates it; a CPU with AVX512-BF16 or AMX) and ``"fp32"`` elsewhere.

    >>> resolve_precision("fp32", torch.device("cpu"))
    'fp32'
    >>> resolve_precision("auto", torch.device("cpu")) in ("bf16", "fp32")
    True
    """
    if precision != "auto":
        return precision
    if device.type == "cuda":
        if device.index is None:
            native = torch.cuda.is_bf16_supported(including_emulation=False)
        else:  # the card the run trains on, not the current one
            with torch.cuda.device(device.index):
                native = torch.cuda.is_bf16_supported(including_emulation=False)
        return "bf16" if native else "fp32"
    if device.type == "cpu":
        return "bf16" if cpu_has_native_bfloat16() else "fp32"
    return "fp32"


def autocast(precision: str, device_type: str) -> torch.autocast:
    """The autocast context of a resolved ``precision`` (``"fp32"``: autocast off, also inside
    an enclosing autocast region; ``"bf16"`` / ``"fp16"``: bfloat16 / float16).

    >>> with autocast("bf16", "cpu"):
    ...     (torch.ones(2, 2) @ torch.ones(2, 2)).dtype
    torch.bfloat16
    """
    if precision == "fp32":
        return torch.autocast(device_type=device_type, enabled=False)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return torch.autocast(device_type=device_type, dtype=dtype)
