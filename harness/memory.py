"""Keep the process's resident memory close to what it uses.

glibc raises its mmap threshold every time a large block is freed (up to 32 MB), after
which mid-sized tensors come from the heap and freed pages stay resident: peak memory
then drifts by hundreds of MB from run to run. A fixed threshold returns such blocks
to the system as soon as they are freed (measured on the default suite: peak RSS
1.35-1.66 GB without, 1.23-1.25 GB with).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import resource
from pathlib import Path

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
THRESHOLD = 4 * 2**20


def release_freed_memory() -> bool:
    """Fix glibc's mmap and trim thresholds; False where there is no glibc (a no-op)."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, THRESHOLD))


def peak_rss_mib() -> float:
    """The process's peak resident memory, in MiB, since it started or since
    :func:`reset_peak`: Linux's ``VmHWM`` (``getrusage`` elsewhere, whose maximum on
    Linux also carries the memory of the process that started this one)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak() -> bool:
    """Start the peak count afresh, so a second run in one process records its own peak:
    collect the garbage an earlier run may have left in reference cycles (its model
    among it), then reset the kernel's high-water mark (Linux: ``/proc/self/clear_refs``).
    False where the mark cannot be reset (the peak then covers the whole process)."""
    gc.collect()
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True
