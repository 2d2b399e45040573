"""The allocator setting that keeps peak memory steady, and a peak count per run."""

from __future__ import annotations

import ctypes.util
import platform

import pytest

from harness.memory import peak_rss_mib, release_freed_memory, reset_peak


@pytest.mark.skipif(
    platform.system() != "Linux" or not ctypes.util.find_library("c"), reason="glibc only"
)
def test_thresholds_are_fixed_on_glibc():
    assert release_freed_memory() is True


@pytest.mark.skipif(platform.system() != "Linux", reason="Linux only")
def test_the_peak_restarts_after_a_reset():
    reset_peak()  # an earlier test's peak in this process would hide the block below
    before = peak_rss_mib()
    block = bytearray(256 * 2**20)
    block[::4096] = b"\x01" * len(block[::4096])  # touch every page
    grown = peak_rss_mib()
    assert grown > before + 200
    del block
    assert reset_peak() is True
    assert peak_rss_mib() < grown - 200
