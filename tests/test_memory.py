"""The allocator setting that keeps peak memory steady."""

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
