"""The runner: master-copy restore, and resuming a run killed midway (real subprocesses)."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import textwrap

import pandas as pd
import pytest
import torch

from harness.quant import quantize_
from harness.quant.master import MasterCopy
from harness.quant.rtn import RTNConfig
from tests.conftest import REPO

# Runs the CLI in this process, but SIGKILLs the process at the n-th call of a store
# function: after a finished part ("append"), or halfway through writing one, after the
# temporary file is written and before it is renamed into place ("_atomic_write").
KILLER = textwrap.dedent(
    """
    import os, signal, sys
    from harness import store
    target, when = sys.argv[1], int(sys.argv[2])
    calls = {"n": 0}
    if target == "append":
        original = store.RunStore.append
        def patched(self, *args, **kwargs):
            original(self, *args, **kwargs)
            calls["n"] += 1
            if calls["n"] == when:
                os.kill(os.getpid(), signal.SIGKILL)
        store.RunStore.append = patched
    else:
        original = store._atomic_write
        def patched(path, write):
            if path.suffix == ".parquet" and path.parent.name == "parts":
                calls["n"] += 1
                if calls["n"] == when:
                    write(path.with_name("." + path.name + ".partial.tmp"))
                    os.kill(os.getpid(), signal.SIGKILL)
            original(path, write)
        store._atomic_write = patched
    from harness.cli import main
    sys.exit(main(sys.argv[3:]))
    """
)


def cli_args(model_dir, suite, out) -> list[str]:
    return ["run", "--model", str(model_dir), "--suite", str(suite), "--out", str(out), "--methods", "rtn",
            "--bits", "8,3,2", "--group-size", "32", "--threads", "1", "--no-progress"]  # fmt: skip


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=600)


def sorted_items(path) -> pd.DataFrame:
    items = pd.read_parquet(path / "items.parquet")
    items["slices"] = items["slices"].map(tuple)
    return items.sort_values(["variant", "task", "item_id"]).reset_index(drop=True)


# (kills after whole parts, at random moments, are tests/test_faults.py's; this one dies
# between writing a part's temporary file and renaming it into place)
@pytest.mark.parametrize("target,when", [("_atomic_write", 3)])
def test_killed_run_resumes_to_the_same_rows(tiny_model_dir, tiny_suite, tmp_path, target, when):
    reference = tmp_path / "uninterrupted"
    done = run([sys.executable, "-m", "harness", *cli_args(tiny_model_dir, tiny_suite, reference)])
    assert done.returncode == 0, done.stderr

    out = tmp_path / "killed"
    killed = run(
        [
            sys.executable,
            "-c",
            KILLER,
            target,
            str(when),
            *cli_args(tiny_model_dir, tiny_suite, out),
        ]
    )
    assert killed.returncode == -9, killed.stderr
    before = {p.name: p.stat().st_mtime_ns for p in (out / "parts").glob("*.parquet")}
    assert 0 < len(before) < 12  # 4 variants x 3 tasks

    resumed = run([sys.executable, "-m", "harness", *cli_args(tiny_model_dir, tiny_suite, out)])
    assert resumed.returncode == 0, resumed.stderr
    after = {p.name: p.stat().st_mtime_ns for p in (out / "parts").glob("*.parquet")}
    assert len(after) == 12
    assert all(after[name] == mtime for name, mtime in before.items())  # nothing recomputed
    assert not list(out.rglob("*.tmp"))
    pd.testing.assert_frame_equal(sorted_items(out), sorted_items(reference), check_exact=True)


def test_a_damaged_part_and_reference_are_recomputed_by_the_same_command(
    tiny_model_dir, tiny_suite, tmp_path
):
    """A part file truncated on disk and a reference overwritten with garbage: the same
    command again warns, recomputes them, and stores exactly the uninterrupted rows."""
    from harness.cli import main

    out = tmp_path / "run"
    first = main(cli_args(tiny_model_dir, tiny_suite, out))
    expected = sorted_items(out)
    part = sorted((out / "parts").glob("rtn-w3g32__*.parquet"))[0]
    part.write_bytes(part.read_bytes()[: part.stat().st_size // 2])
    reference = sorted((out / "reference").glob("*.safetensors"))[0]
    reference.write_bytes(b"\x00garbage")
    from harness.store import RunStore

    RunStore._held_locks.clear()  # as a new process would
    assert main(cli_args(tiny_model_dir, tiny_suite, out)) == first
    assert part.exists() and part.with_name(part.name + ".damaged").exists()
    pd.testing.assert_frame_equal(sorted_items(out), expected)


def test_master_copy_restores_weights_exactly(tiny_model):
    model = copy.deepcopy(tiny_model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    master = MasterCopy(model)
    quantize_(model, RTNConfig(bits=2, group_size=32))
    assert not torch.equal(
        model.model.layers[0].mlp.up_proj.weight, before["model.layers.0.mlp.up_proj.weight"]
    )
    master.restore()
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_master_copy_puts_back_replaced_layers(tiny_model):
    model = copy.deepcopy(tiny_model)
    original = model.model.layers[0].self_attn.q_proj
    master = MasterCopy(model)
    model.model.layers[0].self_attn.set_submodule("q_proj", torch.nn.Identity())
    master.restore()
    assert model.model.layers[0].self_attn.q_proj is original


def test_items_longer_than_the_context_are_left_truncated_counted_and_reported(
    tiny_model_dir, tmp_path
):
    """The tiny model's context is 512 tokens (one per byte): a 700-byte question is
    scored on its last 512 tokens, as lm-eval does, and the run says how many were."""
    import json

    from harness.cli import main
    from tests.conftest import write_jsonl

    items = [{"id": f"q{i}", "context": ("filler " * 100 if i < 2 else "") + f"{i} plus one is",
              "choices": [str(i + 1), str(i + 2)], "answer": 0} for i in range(5)]  # fmt: skip
    write_jsonl(tmp_path / "mc.jsonl", items)
    (tmp_path / "s.yaml").write_text(
        "name: s\ntasks: [{name: mc, kind: multiple_choice, data: mc.jsonl}]\n"
    )
    out = tmp_path / "run"
    code = main(["run", "--model", str(tiny_model_dir), "--suite", str(tmp_path / "s.yaml"), "--out", str(out),
                 "--bits", "8", "--no-progress"])  # fmt: skip
    assert code in (0, 1)
    assert json.loads((out / "manifest.json").read_text())["truncated"] == {"mc": 2}
    rows = pd.read_parquet(out / "items.parquet")
    assert len(rows) == 10 and rows["nll"].notna().all() and (rows["nll"] < float("inf")).all()
    assert (
        "Left-truncated to the model's context (oldest tokens dropped): mc: 2 item(s)."
        in (out / "report.md").read_text()
    )
