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


def test_an_undeclared_metric_is_refused_at_suite_load(tmp_path):
    from harness.errors import InputError

    (tmp_path / "t.yaml").write_text("task: t\n")
    suite = tmp_path / "s.yaml"
    suite.write_text("name: x\ntasks: [{name: a, kind: lm_eval, lm_eval: t.yaml, metric: bleu}]\n")
    with pytest.raises(InputError, match="unknown metric 'bleu'.*declared metrics: acc"):
        load_suite(suite)


def test_rolling_metrics_become_token_weighted_perplexity_rows():
    """lm-eval logs (log-likelihood, words) per document for word_perplexity: the rows
    carry them as nll and n_tokens, so the perplexity is finite and weighted as lm-eval's
    weighted_perplexity aggregation weights it."""
    import math

    from harness.metrics import get_metric
    from harness.store import rows_to_frame

    task = Task(name="wiki", kind="lm_eval", data=None, lm_eval="wiki", metric="word_perplexity")
    samples = [{"doc_id": i, "doc": {}, "target": "", "filter": "none",
                "word_perplexity": (-ll, words), "byte_perplexity": (-ll, 5 * words)}
               for i, (ll, words) in enumerate([(30.0, 10), (50.0, 20)])]  # fmt: skip
    rows = to_rows(task, samples, "v")
    assert [(r.nll, r.n_tokens) for r in rows] == [(30.0, 10), (50.0, 20)]
    value = get_metric("word_perplexity").value(rows_to_frame(rows))
    assert value == pytest.approx(math.exp(80.0 / 30)) and all(r.correct is None for r in rows)


GEN_DOCS = [{"id": f"g{i}", "question": f"{i} + 1 =", "answer": str(i + 1)} for i in range(4)]


def test_several_filters_give_one_row_per_document(tmp_path, tiny_model, tokenizer):
    """A gsm8k-style task with two filters logs each document twice; the rows keep the
    first filter's answers (or the one named), one per document, matching lm-eval's own
    per-filter accuracy."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    data = tmp_path / "gen.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in GEN_DOCS))
    (tmp_path / "two_filters.yaml").write_text(
        f"""task: two_filters
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "{{{{question}}}}"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: 4
  do_sample: false
metric_list:
  - metric: exact_match
filter_list:
  - name: strict
    filter:
      - function: regex
        regex_pattern: '(\\d+)'
      - function: take_first
  - name: anything
    filter:
      - function: regex
        regex_pattern: '(.*)'
      - function: take_first
"""
    )
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        "name: f\ntasks: [{name: gen, kind: lm_eval, lm_eval: two_filters.yaml, metric: exact_match}]\n"
    )
    task = load_suite(suite).tasks[0]
    samples = run_samples(
        task, tiny_model, tokenizer, limit=None, batch_size=2, max_length=256, seed=0
    )
    assert len(samples) == 2 * len(GEN_DOCS)  # one sample per document and filter
    rows = to_rows(task, samples, "v")
    assert [r.item_id for r in rows] == [d["id"] for d in GEN_DOCS]
    strict = [s for s in samples if s["filter"] == "strict"]
    assert [r.prediction for r in rows] == [str(s["filtered_resps"][0]) for s in strict]
    other = to_rows(Task(**{**task.__dict__, "lm_eval_filter": "anything"}), samples, "v")
    assert [r.prediction for r in other] == [
        str(s["filtered_resps"][0]) for s in samples if s["filter"] == "anything"
    ]
    with pytest.raises(Exception, match="no filter 'nope'.*strict, anything"):
        to_rows(Task(**{**task.__dict__, "lm_eval_filter": "nope"}), samples, "v")
    direct = lm_eval.simple_evaluate(
        model=HFLM(pretrained=tiny_model, tokenizer=tokenizer, batch_size=1, max_length=256),
        tasks=["two_filters"], task_manager=TaskManager(include_path=str(tmp_path), include_defaults=False),
        bootstrap_iters=0,
    )["results"]["two_filters"]  # fmt: skip
    assert sum(r.correct for r in rows) / len(rows) == pytest.approx(direct["exact_match,strict"])


def test_missing_lm_eval_file_is_a_suite_error(tmp_path):
    from harness.errors import InputError

    suite = tmp_path / "s.yaml"
    suite.write_text("name: x\ntasks: [{name: a, kind: lm_eval, lm_eval: nope.yaml}]\n")
    with pytest.raises(InputError, match="lm-eval task file not found"):
        load_suite(suite)
    suite.write_text("name: x\ntasks: [{name: a, kind: lm_eval}]\n")
    with pytest.raises(InputError, match="missing required key 'lm_eval'"):
        load_suite(suite)
