"""Faults a CI job meets: killed or interrupted runs, a busy folder, a full disk, and
reruns that must store exactly the same rows."""

from __future__ import annotations

import contextlib
import errno
import json
import random
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

import harness.store
from harness.cli import EXIT_GATE_FAILED, EXIT_OK, EXIT_USAGE, main
from harness.store import RunStore, _readable
from tests.conftest import REPO, write_jsonl

FINISHED = (EXIT_OK, EXIT_GATE_FAILED)


@pytest.fixture(scope="module")
def two_task_suite(tmp_path_factory):
    root = tmp_path_factory.mktemp("suite")
    write_jsonl(root / "text.jsonl", [{"id": f"t{i}", "text": f"Line {i} of a plain text. " * 6}
                                      for i in range(40)])  # fmt: skip
    write_jsonl(root / "mc.jsonl", [{"id": f"m{i}", "context": f"{i} plus one is",
                                     "choices": [str(i + 1), str(i + 2), "cat"], "answer": 0}
                                    for i in range(60)])  # fmt: skip
    suite = root / "suite.yaml"
    suite.write_text("name: two\ntasks:\n"
                     "  - {name: text, kind: perplexity, data: text.jsonl, window: 48}\n"
                     "  - {name: mc, kind: multiple_choice, data: mc.jsonl}\n")  # fmt: skip
    return suite


def sweep(model_dir, suite, out) -> list[str]:
    return ["run", "--model", str(model_dir), "--suite", str(suite), "--out", str(out),
            "--methods", "rtn", "--bits", "8,4,2", "--group-size", "32", "--threads", "1",
            "--no-progress"]  # fmt: skip


def rows(out) -> pd.DataFrame:
    items = pd.read_parquet(out / "items.parquet")
    return items.sort_values(["variant", "task", "item_id"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def uninterrupted(tiny_model_dir, two_task_suite, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    assert main(sweep(tiny_model_dir, two_task_suite, out)) in FINISHED
    RunStore._held_locks.clear()
    return out


def assert_whole(out, killed: bool = False) -> None:
    """Every stored file reads back; nothing half-written is in place (a run killed while
    writing leaves its temporary file, which the next run removes)."""
    assert killed or not list(out.rglob("*.tmp"))
    assert not list(out.rglob("*.damaged"))
    if (out / "manifest.json").exists():  # (a run killed while starting has none yet)
        json.loads((out / "manifest.json").read_text())
    for path in [*out.glob("parts/*.parquet"), *out.glob("reference/*.safetensors")]:
        assert _readable(path), path


def start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "harness", *args], cwd=REPO,
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)  # fmt: skip


def wait_for_parts(proc: subprocess.Popen, n: int) -> None:
    """Read the run's log until ``n`` more parts were stored (or it ended)."""
    seen = 0
    while seen < n:
        line = proc.stderr.readline()
        if not line:
            return
        seen += " · " in line and "(n=" in line


def test_killed_at_five_random_moments_resumes_to_the_uninterrupted_rows(
    tiny_model_dir, two_task_suite, uninterrupted, tmp_path
):
    out = tmp_path / "run"
    args = sweep(tiny_model_dir, two_task_suite, out)
    rng = random.Random(5)
    plan = [0, 1, 1, 2, 1]  # parts each run stores before its kill (0: killed while starting)
    rng.shuffle(plan)
    stored = []
    for parts in plan:
        proc = start(args)
        wait_for_parts(proc, parts)  # then a random moment later: scoring, quantizing, writing
        time.sleep(rng.uniform(0.0, 0.05) if parts else rng.uniform(1.0, 6.0))
        assert proc.poll() is None, "the run ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
        assert_whole(out, killed=True)
        stored.append(len(list(out.glob("parts/*.parquet"))))
    assert len(set(stored)) >= 3, stored  # killed at different stages of the sweep
    finished = subprocess.run([sys.executable, "-m", "harness", *args], cwd=REPO,
                              capture_output=True, text=True)  # fmt: skip
    assert finished.returncode in FINISHED, finished.stderr
    assert_whole(out)
    pd.testing.assert_frame_equal(rows(out), rows(uninterrupted))


def test_ctrl_c_keeps_finished_parts_releases_the_lock_and_exits_130(
    tiny_model_dir, two_task_suite, tmp_path
):
    out = tmp_path / "run"
    proc = start(sweep(tiny_model_dir, two_task_suite, out))
    wait_for_parts(proc, 3)
    proc.send_signal(signal.SIGINT)
    err = proc.stderr.read()
    assert proc.wait() == 130
    assert err.strip().splitlines()[-1] == "qharness: interrupted; rerun the same command to resume"
    assert len(list(out.glob("parts/*.parquet"))) >= 3
    assert_whole(out)
    RunStore.lock(out)  # the lock was released
    RunStore._held_locks.pop(out.resolve()).close()


@contextlib.contextmanager
def another_process_holding(out):
    """A second process that holds the lock of run folder ``out``; yields its pid."""
    holder = subprocess.Popen([sys.executable, "-c", "import pathlib, time; from harness.store import RunStore; "
                               f"RunStore.lock(pathlib.Path({str(out)!r})); print('locked', flush=True); time.sleep(60)"],
                              cwd=REPO, stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        yield holder.pid
    finally:
        holder.kill()
        holder.wait()


def test_a_busy_folder_is_refused_before_the_model_loads(
    tiny_model_dir, two_task_suite, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "run"

    def no_loading(spec):
        raise AssertionError("the model was loaded for a folder in use")

    monkeypatch.setattr("harness.run.runner.load_model", no_loading)
    with another_process_holding(out) as pid:
        code = main(sweep(tiny_model_dir, two_task_suite, out))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == EXIT_USAGE and len(err) == 1
    assert f"another qharness process (pid {pid}: " in err[0]


def test_a_full_disk_leaves_every_file_whole_and_a_rerun_resumes(
    tiny_model_dir, two_task_suite, uninterrupted, tmp_path, capsys, monkeypatch
):
    """ENOSPC at the n-th write of a run (part, reference, manifest, report, ...), for
    writes spread over a whole sweep; each time the rerun picks up where it stopped."""
    out = tmp_path / "run"
    args = sweep(tiny_model_dir, two_task_suite, out)
    original = harness.store._atomic_write
    failures = 0
    for nth in (1, 2, 4, 7, 11, 16, 22, 30):
        calls = 0

        def full_disk(path, write, nth=nth):
            nonlocal calls
            calls += 1
            if calls != nth:
                return original(path, write)

            def half_then_full(tmp):
                tmp.write_bytes(b"PAR1 half a file")
                raise OSError(errno.ENOSPC, "No space left on device")

            return original(path, half_then_full)

        monkeypatch.setattr(harness.store, "_atomic_write", full_disk)
        code = main(args)
        err = capsys.readouterr().err.strip().splitlines()
        if calls >= nth:
            failures += 1
            assert code == EXIT_USAGE, err
            assert err[-1].startswith("qharness: error: No space left on device (")
            assert "rerun the same command to resume" in err[-1]
        assert_whole(out)
        RunStore._held_locks.clear()
    assert failures >= 6
    monkeypatch.setattr(harness.store, "_atomic_write", original)
    assert main(args) in FINISHED
    pd.testing.assert_frame_equal(rows(out), rows(uninterrupted))


# what may differ between two runs of one command: how long things took, and where
VOLATILE = {"timings", "peak_rss_mib", "run_name", "command"}


def steady(manifest: dict) -> dict:
    """The manifest without what may differ (each variant's quantization ``seconds`` too)."""
    variants = {name: {k: v for k, v in record.items() if k != "seconds"}
                for name, record in manifest["variants"].items()}  # fmt: skip
    return {k: v for k, v in manifest.items() if k not in VOLATILE} | {"variants": variants}


def test_the_same_command_twice_stores_byte_identical_rows(
    tiny_model_dir, two_task_suite, uninterrupted, tmp_path
):
    again = tmp_path / "again"
    assert main(sweep(tiny_model_dir, two_task_suite, again)) in FINISHED
    RunStore._held_locks.clear()
    for name in ["items.parquet", *(f"parts/{p.name}" for p in (uninterrupted / "parts").iterdir()),
                 *(f"reference/{p.name}" for p in (uninterrupted / "reference").iterdir())]:  # fmt: skip
        assert (again / name).read_bytes() == (uninterrupted / name).read_bytes(), name
    first, second = (json.loads((d / "manifest.json").read_text()) for d in (uninterrupted, again))
    assert steady(first) == steady(second)
    assert (again / "gate.json").read_text() == (uninterrupted / "gate.json").read_text()
