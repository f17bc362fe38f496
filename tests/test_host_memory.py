"""Memory freed on the C heap (where XLA's compiler allocates) goes back to the OS on a trim."""

import ctypes
from pathlib import Path

import pytest

from crl import host_memory

BLOCK = 4096  # below glibc's mmap threshold: the blocks come from the heap, as compile memory does


def resident_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


@pytest.mark.skipif(host_memory._malloc_trim() is None, reason="needs glibc's malloc_trim")
def test_release_freed_returns_a_fragmented_heap_to_the_os():
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    blocks = [libc.malloc(BLOCK) for _ in range(40_000)]  # ~160 MiB
    for block in blocks:
        ctypes.memset(block, 1, BLOCK)  # touch every page: resident
    kept = set(blocks[::64])  # live blocks spread over the heap: free() alone cannot shrink it
    for block in blocks:
        if block not in kept:
            libc.free(block)
    before = resident_mib()
    assert host_memory.release_freed()
    after = resident_mib()
    for block in kept:
        libc.free(block)
    assert before - after > 100  # of the ~157 MiB freed between the kept blocks


def test_peak_resident_is_at_least_what_is_resident_now():
    assert host_memory.peak_resident_gib() * 1024 >= resident_mib() * 0.99
