"""qharness run --ray on a local Ray: the same rows as a sequential run, resuming across
modes, and workers that die (retried once, or reported with nothing half-stored)."""

from __future__ import annotations

import json
import signal
import sys

import pandas as pd
import pytest

from harness.cli import EXIT_USAGE, main
from harness.store import RunStore
from tests.conftest import REPO
from tests.test_faults import FINISHED, another_process_holding, rows, start, wait_for_parts

pytest.importorskip("ray")


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
             runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})  # fmt: skip
    yield
    ray.shutdown()


def sweep(model_dir, suite, out, *extra) -> list[str]:
    return ["run", "--model", str(model_dir), "--suite", str(suite), "--out", str(out), "--methods", "rtn",
            "--bits", "8,2", "--group-size", "32", "--threads", "1", "--no-progress", *extra]  # fmt: skip


@pytest.fixture(scope="module")
def sequential(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("seq")
    suite = _suite(root)
    out = root / "run"
    assert main(sweep(tiny_model_dir, suite, out)) in FINISHED
    RunStore._held_locks.clear()
    return suite, out


def _suite(root):
    from tests.conftest import write_jsonl

    write_jsonl(
        root / "text.jsonl",
        [{"id": f"t{i}", "text": f"Line {i} of a plain text. " * 6} for i in range(6)],
    )
    write_jsonl(root / "mc.jsonl", [{"id": f"m{i}", "context": f"{i} plus one is",
                                     "choices": [str(i + 1), str(i + 2), "cat"], "answer": 0} for i in range(8)])  # fmt: skip
    suite = root / "suite.yaml"
    suite.write_text("name: two\ntasks:\n  - {name: text, kind: perplexity, data: text.jsonl, window: 48}\n"
                     "  - {name: mc, kind: multiple_choice, data: mc.jsonl}\n")  # fmt: skip
    return suite


def test_a_ray_run_stores_the_rows_of_a_sequential_run(tiny_model_dir, sequential, tmp_path):
    suite, reference = sequential
    out = tmp_path / "run"
    assert main(sweep(tiny_model_dir, suite, out, "--ray")) in FINISHED
    RunStore._held_locks.clear()
    pd.testing.assert_frame_equal(rows(out), rows(reference))
    variants = json.loads((out / "manifest.json").read_text())["variants"]
    assert variants["rtn-w2g32"]["bits"] == 2 and variants["rtn-w2g32"]["n_layers"] > 0


def test_an_interrupted_ray_run_resumes_without_ray_and_the_other_way(
    tiny_model_dir, sequential, tmp_path
):
    suite, reference = sequential
    out = tmp_path / "run"
    proc = start(sweep(tiny_model_dir, suite, out, "--ray", "--bits", "8,4,2"))
    wait_for_parts(proc, 2)  # the baseline's two parts, then killed while variants run on Ray
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    assert main(sweep(tiny_model_dir, suite, out)) in FINISHED  # resumed without --ray
    RunStore._held_locks.clear()
    pd.testing.assert_frame_equal(rows(out), rows(reference))
    assert (
        main(sweep(tiny_model_dir, suite, out, "--ray", "--bits", "8,4,2")) in FINISHED
    )  # with --ray
    RunStore._held_locks.clear()
    assert set(rows(out)["variant"]) == {"baseline", "rtn-w8g32", "rtn-w4g32", "rtn-w2g32"}


def test_a_worker_that_dies_is_retried_and_one_that_always_dies_is_reported(
    tiny_model_dir, sequential, tmp_path, capsys
):
    import tests.crashing_method  # noqa: F401  (registers the "crash" method)

    suite, reference = sequential
    variants = tmp_path / "variants.yaml"
    marker = tmp_path / "died-once"
    variants.write_text(f"- {{method: crash, bits: 2, group_size: 32, marker: {marker}}}\n"
                        "- {method: rtn, bits: 8, group_size: 32}\n")  # fmt: skip
    out = tmp_path / "run"
    base = ["run", "--model", str(tiny_model_dir), "--suite", str(suite), "--out", str(out), "--threads", "1",
            "--no-progress", "--ray"]  # fmt: skip
    assert main([*base, "--variants", str(variants)]) in FINISHED
    RunStore._held_locks.clear()
    assert marker.exists()  # it died once, and its retry finished
    got, want = rows(out), rows(reference)
    crashed = got[got["variant"] == "crash-w2"].drop(columns="variant").reset_index(drop=True)
    plain = want[want["variant"] == "rtn-w2g32"].drop(columns="variant").reset_index(drop=True)
    pd.testing.assert_frame_equal(crashed, plain)

    variants.write_text(f"- {{method: crash, bits: 4, group_size: 32, marker: {marker}, always: true}}\n"
                        "- {method: rtn, bits: 4, group_size: 32}\n")  # fmt: skip
    code = main([*base, "--variants", str(variants)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == EXIT_USAGE and "variant 'crash-w4-always'" in err[-1] and "rerun" in err[-1]
    stored = set(pd.read_parquet(out / "items.parquet")["variant"])
    assert "rtn-w4g32" in stored and "crash-w4-always" not in stored  # nothing half-stored
    assert not list((out / "parts").glob("crash-w4-always*"))


def test_ray_missing_is_one_clear_error(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)
    assert main(["run", "--ray"]) == EXIT_USAGE
    assert "--ray needs Ray: pip install 'qharness[ray]'" in capsys.readouterr().err


def test_the_driver_still_refuses_a_second_run_on_the_same_folder(
    tiny_model_dir, sequential, tmp_path, capsys
):
    suite, _ = sequential
    out = tmp_path / "run"
    with another_process_holding(out) as pid:
        assert main(sweep(tiny_model_dir, suite, out, "--ray")) == EXIT_USAGE
    assert f"another qharness process (pid {pid}" in capsys.readouterr().err
