"""keep_freed_memory: glibc's malloc told to keep freed blocks; nothing done elsewhere."""

from __future__ import annotations

import platform
import resource
import subprocess
import sys
import textwrap

import pytest

from tripletkit.training import allocator

# Allocates, fills and frees a 64 MiB block ten times in a fresh process and prints the page faults
# that took: every cycle faults the block's pages in again when glibc maps and unmaps it,
# and none once the freed block stays in the heap.
_CYCLES = textwrap.dedent(
    """
    import ctypes, resource, sys
    from tripletkit.training.allocator import keep_freed_memory
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    if sys.argv[1] == "keep":
        assert keep_freed_memory() and keep_freed_memory()  # idempotent
    size = 64 << 20

    def cycle():
        block = libc.malloc(size)
        ctypes.memset(block, 1, size)
        libc.free(block)

    cycle()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        cycle()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """
)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_on_glibc_a_freed_large_block_is_reused_without_page_faults():
    faults = {
        mode: int(
            subprocess.run(
                [sys.executable, "-c", _CYCLES, mode], capture_output=True, text=True, check=True
            ).stdout
        )
        for mode in ("default", "keep")
    }
    pages = 10 * (64 << 20) // resource.getpagesize()
    assert faults["default"] > pages // 2
    assert faults["keep"] < pages // 100


def test_does_nothing_without_glibc(monkeypatch):
    monkeypatch.setattr(allocator, "_applied", False)
    monkeypatch.setattr(platform, "libc_ver", lambda: ("musl", "1.2"))
    assert allocator.keep_freed_memory() is False
