"""The lm-eval adapter against lm-eval run directly, and against the native engine."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from harness.cli import main
from harness.evaluate.lm_eval_adapter import run_samples, to_rows
from harness.records import Task
from harness.suites import load_suite

DOCS = [{"id": f"d{i}", "context": f"{i} plus one is", "choices": [str(i + 1), str(i + 2), "cat"], "answer": i % 3}
        for i in range(9)]  # fmt: skip


@pytest.fixture()
def lm_eval_suite(tmp_path) -> Path:
    data = tmp_path / "mc.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    (tmp_path / "tiny_mc.yaml").write_text(
        f"""task: tiny_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{context}}}}"
doc_to_choice: choices
doc_to_target: answer
metric_list:
  - metric: acc
  - metric: acc_norm
"""
    )
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        """name: mixed
tasks:
  - {name: via_lm_eval, kind: lm_eval, lm_eval: tiny_mc.yaml, slices: [arithmetic]}
  - {name: native, kind: multiple_choice, data: mc.jsonl, slices: [arithmetic], prompt: "{context}"}
"""
    )
    return suite


def test_adapter_accuracy_equals_lm_eval_run_directly(lm_eval_suite, tiny_model, tokenizer):
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    task = load_suite(lm_eval_suite).tasks[0]
    rows = to_rows(
        task,
        run_samples(task, tiny_model, tokenizer, limit=None, batch_size=4, max_length=512, seed=0),
        "v",
    )
    direct = lm_eval.simple_evaluate(
        model=HFLM(pretrained=tiny_model, tokenizer=tokenizer, batch_size=1, max_length=512),
        tasks=["tiny_mc"], task_manager=TaskManager(include_path=str(lm_eval_suite.parent), include_defaults=False),
        bootstrap_iters=0,
    )["results"]["tiny_mc"]  # fmt: skip
    assert len(rows) == len(DOCS) and [r.item_id for r in rows] == [d["id"] for d in DOCS]
    assert sum(r.correct for r in rows) / len(rows) == pytest.approx(direct["acc,none"])
    assert sum(r.correct_norm for r in rows) / len(rows) == pytest.approx(direct["acc_norm,none"])


def test_lm_eval_and_the_native_engine_agree_item_by_item(lm_eval_suite, tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    code = main(["run", "--model", str(tiny_model_dir), "--suite", str(lm_eval_suite), "--out", str(out),
                 "--bits", "8,2", "--group-size", "32", "--threads", "1", "--no-progress"])  # fmt: skip
    assert code in (0, 1)
    items = pd.read_parquet(out / "items.parquet")
    assert set(items["variant"]) == {"baseline", "rtn-w8g32", "rtn-w2g32"}
    for variant, rows in items.groupby("variant"):
        ours = rows[rows["task"] == "native"].set_index("item_id")
        theirs = rows[rows["task"] == "via_lm_eval"].set_index("item_id").loc[ours.index]
        assert (ours["correct"] == theirs["correct"]).all(), variant
        assert (ours["correct_norm"] == theirs["correct_norm"]).all(), variant
        assert ours["gold_logprob"].to_numpy() == pytest.approx(
            theirs["gold_logprob"].to_numpy(), abs=1e-4
        )
        assert ours["margin"].to_numpy() == pytest.approx(theirs["margin"].to_numpy(), abs=1e-4)
    comparisons = pd.read_csv(out / "comparisons.csv")
    assert {"via_lm_eval", "native"} <= set(comparisons["task"])


def test_unknown_metric_is_a_clear_error(lm_eval_suite, tiny_model, tokenizer):
    from harness.errors import InputError

    task = load_suite(lm_eval_suite).tasks[0]
    samples = run_samples(
        task, tiny_model, tokenizer, limit=2, batch_size=2, max_length=512, seed=0
    )
    bad = Task(**{**task.__dict__, "metric": "f1"})
    with pytest.raises(InputError, match="no metric 'f1'"):
        to_rows(bad, samples, "v")


def test_missing_lm_eval_file_is_a_suite_error(tmp_path):
    from harness.errors import InputError

    suite = tmp_path / "s.yaml"
    suite.write_text("name: x\ntasks: [{name: a, kind: lm_eval, lm_eval: nope.yaml}]\n")
    with pytest.raises(InputError, match="lm-eval task file not found"):
        load_suite(suite)
    suite.write_text("name: x\ntasks: [{name: a, kind: lm_eval}]\n")
    with pytest.raises(InputError, match="missing required key 'lm_eval'"):
        load_suite(suite)
