"""The run store: append, resume, refuse to mix runs, reference round trip."""

from __future__ import annotations

import pytest
import torch

from harness.errors import InputError
from harness.records import ItemResult, Reference
from harness.store import RunStore


def row(variant: str, task: str, item: str, correct: bool = True) -> ItemResult:
    return ItemResult(variant=variant, task=task, item_id=item, slices=("general", "x"), correct=correct,
                      correct_norm=None, score=float(correct), nll=1.5, gold_logprob=-1.5, n_tokens=3,
                      kld=None, top1_agree=None, margin=None, prediction="p", target="t")  # fmt: skip


def test_append_and_load(tmp_path):
    store = RunStore.open(tmp_path / "run", {"model": "a"})
    assert not store.has("baseline", "t/1")
    store.append(
        "baseline", "t/1", [row("baseline", "t/1", "1"), row("baseline", "t/1", "2", False)]
    )
    store.append("v", "t/1", [row("v", "t/1", "1")])
    assert store.has("baseline", "t/1") and store.has("v", "t/1")
    items = store.load_items()
    assert list(items["variant"]) == ["baseline", "baseline", "v"]
    assert list(items.loc[0, "slices"]) == ["general", "x"]
    assert (tmp_path / "run" / "items.parquet").exists()
    assert not list((tmp_path / "run").rglob("*.tmp"))


def test_reopen_same_fingerprint_resumes_and_other_is_refused(tmp_path):
    store = RunStore.open(tmp_path / "run", {"model": "a", "code": "1"})
    store.append("baseline", "t", [row("baseline", "t", "1")])
    again = RunStore.open(tmp_path / "run", {"model": "a", "code": "1"})
    assert again.has("baseline", "t")
    with pytest.raises(InputError, match=r"holds a different run \(changed: code\)"):
        RunStore.open(tmp_path / "run", {"model": "a", "code": "2"})
    fresh = RunStore.open(tmp_path / "run", {"model": "a", "code": "2"}, overwrite=True)
    assert not fresh.has("baseline", "t")


def test_refuses_a_folder_that_is_not_a_run(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match="not a qharness run"):
        RunStore.open(tmp_path / "mine", {"model": "a"})


def test_manifest_updates_merge(tmp_path):
    store = RunStore.open(tmp_path / "run", {"model": "a"})
    store.update_manifest(timings={"a": 1.0})
    store.update_manifest(timings={"b": 2.0}, seed=3)
    manifest = store.manifest()
    assert manifest.timings == {"a": 1.0, "b": 2.0} and manifest.seed == 3
    assert manifest.fingerprint == {"model": "a"} and manifest.version == 1


def test_reference_round_trip(tmp_path):
    store = RunStore.open(tmp_path / "run", {"model": "a"})
    refs = {
        "x/1": Reference(
            hidden=torch.randn(2, 3).half(), argmax=torch.tensor([5, 7], dtype=torch.int32)
        ),
        "y": Reference(hidden=torch.zeros(1, 3), argmax=torch.zeros(1, dtype=torch.int32)),
    }
    store.save_reference("task one", refs)
    loaded = store.load_reference("task one")
    assert list(loaded) == ["x/1", "y"]
    assert torch.equal(loaded["x/1"].hidden, refs["x/1"].hidden)
    assert torch.equal(loaded["x/1"].argmax, refs["x/1"].argmax)
    assert torch.equal(loaded["x/1"].argmax, refs["x/1"].argmax)
    assert loaded["y"].hidden.dtype == torch.float32 and loaded["y"].hidden.shape == (1, 3)
    assert store.load_reference("other") is None
    assert store.has_reference("task one") and not store.has_reference("other")


def test_missing_run_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="no qharness run"):
        RunStore(tmp_path / "nothing").manifest()


def test_stale_temporary_files_are_removed_on_reopen(tmp_path):
    RunStore.open(tmp_path / "run", {"model": "a"})
    stale = tmp_path / "run" / "parts" / ".baseline__t.parquet.123.tmp"
    stale.parent.mkdir()
    stale.write_bytes(b"half a file")
    RunStore.open(tmp_path / "run", {"model": "a"})
    assert not stale.exists()


def _hold_lock(root, *, then: str) -> str:
    """Python code for another process that locks ``root`` as a run would, then ``then``."""
    return (f"import pathlib, sys, time, os; from harness.store import RunStore; "
            f"RunStore.lock(pathlib.Path({str(root)!r})); print('locked', flush=True); {then}")  # fmt: skip


def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    import subprocess
    import sys

    RunStore.open(tmp_path / "run", {"model": "a"})  # this process now holds the lock
    other = subprocess.run([sys.executable, "-c", _hold_lock(tmp_path / "run", then="")],
                           capture_output=True, text=True)  # fmt: skip
    assert other.returncode != 0 and "another qharness process" in other.stderr
    assert f"pid {__import__('os').getpid()}" in other.stderr


def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path):
    import os
    import signal
    import subprocess
    import sys

    root = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", _hold_lock(root, then="time.sleep(60)")],
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(InputError, match=f"pid {holder.pid}"):
            RunStore.lock(root)
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    finally:
        holder.kill()
    assert (root / ".lock").exists()  # the dead holder's file is still there ...
    store = RunStore.open(root, {"model": "a"})  # ... and stale: taken over
    assert (root / ".lock").read_text().startswith(f"pid {os.getpid()}:")
    assert store.manifest().raw == {"version": 1, "fingerprint": {"model": "a"}}


def test_a_refused_run_leaves_no_folder_and_overwrite_keeps_the_lock(tmp_path):
    root = tmp_path / "new"
    RunStore.lock(root).release_if_empty()
    assert not root.exists()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="is not a qharness run"):
        RunStore.lock(foreign)
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]  # no lock file left
    store = RunStore.open(tmp_path / "run", {"model": "a"})
    store.append("v", "t", [row("v", "t", "1")])
    lock = RunStore._held_locks[store.root.resolve()]
    RunStore.open(tmp_path / "run", {"model": "b"}, overwrite=True)
    assert RunStore._held_locks[store.root.resolve()] is lock and (store.root / ".lock").exists()
    assert not store.has("v", "t")


def test_a_damaged_part_or_reference_is_set_aside_and_a_damaged_manifest_is_one_line(
    tmp_path, capsys
):
    store = RunStore.open(tmp_path / "run", {"model": "a"})
    store.append("v", "t", [row("v", "t", "1")])
    store.save_reference(
        "t", {"1": Reference(hidden=torch.zeros(2, 3), argmax=torch.zeros(2, dtype=torch.int32))}
    )
    part = store._part("v", "t")
    part.write_bytes(part.read_bytes()[:40])  # truncated on disk
    reference = store._reference("t")
    reference.write_bytes(reference.read_bytes()[:-5])
    with pytest.raises(InputError, match="is damaged.*rerun the same"):
        RunStore(tmp_path / "run").load_items()  # no reopen: a clear error, never a traceback
    RunStore._held_locks.clear()
    reopened = RunStore.open(tmp_path / "run", {"model": "a"})
    err = capsys.readouterr().err
    assert err.count("is damaged; set aside") == 2
    assert not reopened.has("v", "t") and not reopened.has_reference("t")
    assert part.with_name(part.name + ".damaged").exists() and reopened.load_items().empty
    store.manifest_path.write_text('{"fingerprint": {"mod')
    RunStore._held_locks.clear()
    with pytest.raises(InputError, match="manifest.json is damaged .*--overwrite"):
        RunStore.open(tmp_path / "run", {"model": "a"})
    RunStore._held_locks.clear()
    fresh = RunStore.open(tmp_path / "run", {"model": "a"}, overwrite=True)
    assert fresh.manifest().raw == {"version": 1, "fingerprint": {"model": "a"}}
