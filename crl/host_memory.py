"""The host memory a training process holds: its peak, and giving back what XLA's compiler freed.

On a CPU an XLA compile of a brax env's epoch needs about 1 GiB of host memory for a few
seconds, while the arrays a run keeps are tens of MiB (ant, 32 envs: a 56 MiB train state).
glibc's malloc keeps freed memory in its arenas (one per compiling thread), so without a trim a
process stays at its compile peak for the whole run.
"""

from __future__ import annotations

import ctypes
import functools
import resource
import sys

import jax


@functools.cache
def _malloc_trim():
    """glibc's malloc_trim, or None where the C library has none (macOS, musl)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None).malloc_trim
    except AttributeError:
        return None


def release_freed() -> bool:
    """Return the C heap's free pages to the OS (malloc_trim(0): every arena); True if any were."""
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False


def peak_resident_gib() -> float:
    """This process's peak resident set size so far, GiB (compiles included)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak * (1 if sys.platform == "darwin" else 1024) / 2**30  # Linux reports KiB


def peak_device_gib(devices) -> float | None:
    """Largest allocator peak over this process's accelerator devices among `devices`, GiB;
    None on the CPU (no such counter: the host figure is the one)."""
    peaks = [
        (device.memory_stats() or {}).get("peak_bytes_in_use")
        for device in devices
        if device.platform != "cpu" and device.process_index == jax.process_index()
    ]
    peaks = [p for p in peaks if p is not None]
    return max(peaks) / 2**30 if peaks else None
