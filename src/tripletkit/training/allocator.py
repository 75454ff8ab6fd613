"""Keep freed memory in the process, so that each training step reuses the pages of the last.

A training step on the CPU allocates and frees the same large tensors every time (activations and
their gradients: 16 MiB for the first feature map of the Fashion-MNIST recipe). glibc's malloc
may serve blocks that large with fresh ``mmap`` pages and give them back to the system when they
are freed, so that the next step page-faults its working set in again: in a plain loop of the
recipe's network, zero-filling one 160 × 32 × 28 × 28 gradient took 7 ms of the step, most of it
page faults. Raising malloc's ``mmap`` and ``trim`` thresholds keeps freed blocks in the heap for
the next step to reuse: that loop's step went from 185-205 ms to 139-149 ms on 2 cores (alternating
runs of the same script). In the full Fashion-MNIST benchmark the setting changed the epoch times
of pytorch-metric-learning's loops by less than the machine's drift: how much it is worth depends
on the allocation pattern. This is what PyTorch's CPU performance guide gets by preloading
jemalloc or tcmalloc.

The price: the process keeps the memory of its largest step instead of returning it, which is what
a training process reuses anyway. It changes the whole process's allocator, so the
:class:`~tripletkit.training.Trainer` applies it only when ``train.keep_freed_memory`` is on (the
default), and only where the C library is glibc; elsewhere it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

__all__ = ["keep_freed_memory"]

# mallopt(3) parameters of glibc's malloc.h.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# Blocks up to 1 GiB come from the heap; up to 2 GiB - 1 of free heap top is kept.
_MMAP_THRESHOLD = 1 << 30
_TRIM_THRESHOLD = (1 << 31) - 1

_applied = False


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed blocks for reuse; True if it now does (also when an earlier
    call did it), False where the C library is not glibc.

    >>> keep_freed_memory() in (True, False)
    True
    """
    global _applied
    if _applied:
        return True
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # mallopt returns 1 on success, 0 on error.
    _applied = bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)
    )
    return _applied
