"""Process memory: keep resident memory close to what a run uses, measure its peak, and
estimate before loading what a run will need (:class:`MemoryNeed`).

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
from dataclasses import dataclass
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


# before loading: what a run needs, against what the machine has ----------------------
GiB = 2**30
RUNTIME_BYTES = GiB // 2  # the interpreter, torch and the libraries, measured ~0.45 GiB here


@dataclass(frozen=True)
class MemoryNeed:
    """What a run holds at its peak, in bytes (an estimate, stated before loading)."""

    weights: int  # parameters x bytes of the scoring dtype
    master: int  # the float copy each variant is restored from (0 when re-read from disk)
    activations: int  # one batch's forward pass and its chunk of vocabulary-wide logits
    artifact: int = 0  # the largest checkpoint variant, loaded beside the base
    runtime: int = RUNTIME_BYTES

    @property
    def total(self) -> int:
        return self.weights + self.master + self.activations + self.artifact + self.runtime

    def describe(self) -> str:
        parts = [f"weights {self.weights / GiB:.2f}", f"float master copy {self.master / GiB:.2f}",
                 f"activations {self.activations / GiB:.2f}", f"runtime {self.runtime / GiB:.2f}"]  # fmt: skip
        if self.artifact:
            parts.insert(2, f"checkpoint variant {self.artifact / GiB:.2f}")
        return f"about {self.total / GiB:.2f} GiB ({', '.join(parts)} GiB)"


def activation_bytes(config, batch_tokens: int, logit_rows: int = 64) -> int:
    """One layer's working set for ``batch_tokens`` tokens in float32 (hidden states,
    q/k/v and MLP intermediates, attention scores at a width of up to ``batch_tokens``)
    plus ``logit_rows`` positions of vocabulary-wide log-probabilities (three copies)."""
    hidden = int(config.hidden_size)
    inter = int(getattr(config, "intermediate_size", 4 * hidden) or 4 * hidden)
    heads = int(getattr(config, "num_attention_heads", 1) or 1)
    width = min(
        batch_tokens, int(getattr(config, "max_position_embeddings", batch_tokens) or batch_tokens)
    )
    per_token = 8 * hidden + 3 * inter + heads * width
    return 4 * (batch_tokens * per_token + 3 * logit_rows * int(config.vocab_size))


def available_bytes(device) -> int | None:
    """Memory free for this run on ``device``: CUDA's free memory, or on the host
    ``MemAvailable`` capped by the container's (cgroup v2) limit; None when unknown."""
    if device.type == "cuda":
        import torch

        if device.index is None and torch.cuda.device_count() > 1:  # spread over every GPU
            return sum(int(torch.cuda.mem_get_info(i)[0]) for i in range(torch.cuda.device_count()))
        return int(torch.cuda.mem_get_info(device)[0])
    free = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                free = int(line.split()[1]) * 1024
    except OSError:
        return None
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text())
        if limit != "max" and free is not None:
            free = min(free, int(limit) - used)
    except (OSError, ValueError):
        pass
    return free
