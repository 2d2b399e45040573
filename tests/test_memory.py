"""The allocator setting that keeps peak memory steady, and a peak count per run."""

from __future__ import annotations

import ctypes.util
import platform

import pytest

from harness.memory import release_freed_memory


@pytest.mark.skipif(
    platform.system() != "Linux" or not ctypes.util.find_library("c"), reason="glibc only"
)
def test_thresholds_are_fixed_on_glibc():
    assert release_freed_memory() is True


@pytest.mark.skipif(platform.system() != "Linux", reason="Linux only")
def test_the_peak_restarts_after_a_reset():
    """In a fresh process: memory freed by earlier tests in this one would be reused by
    the block below without raising the resident size."""
    import subprocess
    import sys

    script = """
from harness.memory import peak_rss_mib, reset_peak
reset_peak()  # the peak of the imports is not the point
before = peak_rss_mib()
block = bytearray(256 * 2**20)
block[::4096] = b"\\x01" * len(block[::4096])  # touch every page
grown = peak_rss_mib()
assert grown > before + 200, (before, grown)
del block
assert reset_peak() is True
assert peak_rss_mib() < grown - 200, (grown, peak_rss_mib())
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
