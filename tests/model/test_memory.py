"""The allocator setting that keeps peak memory steady, and a peak count per run."""

from __future__ import annotations

import ctypes.util
import os
import platform

import pytest

from harness.model.memory import release_freed_memory


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
from harness.model.memory import peak_rss_mib, reset_peak
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


def test_the_estimate_counts_the_parameters_without_loading_them(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from harness.model.load import memory_need
    from harness.records import ModelSpec

    loaded = AutoModelForCausalLM.from_pretrained(tiny_model_dir)  # the independent count
    fp32 = sum(p.numel() * p.element_size() for p in loaded.parameters())
    need = memory_need(ModelSpec(str(tiny_model_dir)), batch_tokens=1024)
    assert need.weights == fp32 and need.master == 0  # restored from the float32 files on disk
    half = memory_need(ModelSpec(str(tiny_model_dir), dtype="bfloat16"), batch_tokens=1024)
    assert half.weights == fp32 // 2 and half.master == half.weights  # a copy kept in memory
    assert need.total == need.weights + need.activations + need.runtime
    assert memory_need(ModelSpec(str(tiny_model_dir / "missing")), 1024) is None


def test_free_memory_is_read_from_the_system():
    import torch

    from harness.model.memory import available_bytes

    free = available_bytes(torch.device("cpu"))
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert free is None or 0 < free <= total


def test_a_run_that_cannot_fit_is_refused_before_loading(tiny_model_dir, tiny_suite, tmp_path,
                                                         capsys, monkeypatch):  # fmt: skip
    from harness.cli import EXIT_USAGE, main

    def no_loading(spec):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr("harness.run.runner.available_bytes", lambda device: 2**20)
    monkeypatch.setattr("harness.run.runner.load_model", no_loading)
    out = tmp_path / "run"
    args = ["run", "--model", str(tiny_model_dir), "--suite", str(tiny_suite), "--out", str(out),
            "--bits", "8", "--no-progress"]  # fmt: skip
    code = main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == EXIT_USAGE and len(err) == 1, err
    assert "this run needs about 0.5" in err[0] and "but only 0.00 GiB is free" in err[0]
    assert "--no-memory-check" in err[0] and not out.exists()
    monkeypatch.undo()
    monkeypatch.setattr("harness.run.runner.available_bytes", lambda device: 2**20)
    assert main([*args, "--no-memory-check"]) in (0, 1)
