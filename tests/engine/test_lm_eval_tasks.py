"""lm-eval tasks on the harness's engine (``NativeLM``) against lm-eval's own ``HFLM``,
document by document, for each output type; and their rows' KLD and top-1 against a
computation from the models' full logits."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from harness.cli import main
from harness.data.suites import load_suite
from harness.engine.lm_eval_tasks import NativeLM, evaluate_lm_eval, run_samples, to_rows
from harness.engine.scorer import Scorer
from harness.errors import InputError
from harness.records import Task

MAX_LENGTH = 256
DOCS = [{"id": f"d{i}", "context": f"{i} plus one is", "choices": [str(i + 1), str(i + 2), "cat"], "answer": i % 3}
        for i in range(9)]  # fmt: skip
TEXTS = [{"page": " ".join(f"word{i * j % 17}" for j in range(40 + 30 * i))} for i in range(4)]
GEN_DOCS = [{"id": f"g{i}", "question": f"{i} + 1 =", "answer": str(i + 1)} for i in range(4)]

MC_YAML = """task: tiny_mc
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
ROLLING_YAML = """task: tiny_text
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{{{page}}}}"
metric_list:
  - metric: word_perplexity
  - metric: byte_perplexity
"""
GEN_YAML = """task: {name}
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
  max_gen_toks: 6
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


def _write(folder: Path, name: str, template: str, docs: list[dict], **extra) -> Path:
    data = folder / f"{name}.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in docs))
    path = folder / f"{name}.yaml"
    path.write_text(template.format(data=data, name=name, **extra))
    return path


@pytest.fixture()
def task_files(tmp_path) -> Path:
    _write(tmp_path, "tiny_mc", MC_YAML, DOCS)
    _write(tmp_path, "tiny_text", ROLLING_YAML, TEXTS)
    _write(tmp_path, "tiny_gen", GEN_YAML, GEN_DOCS)
    return tmp_path


def _task(folder: Path, file: str, **fields) -> Task:
    suite = folder / "suite.yaml"
    entry = {"name": "t", "kind": "lm_eval", "lm_eval": file, **fields}
    suite.write_text(f"name: s\ntasks: [{json.dumps(entry)}]\n")
    return load_suite(suite).tasks[0]


def _hflm_samples(model, tokenizer, folder: Path, name: str) -> list[dict]:
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    out = lm_eval.simple_evaluate(
        model=HFLM(pretrained=model, tokenizer=tokenizer, batch_size=1, max_length=MAX_LENGTH),
        tasks=[name], task_manager=TaskManager(include_path=str(folder), include_defaults=False),
        bootstrap_iters=0, log_samples=True, random_seed=0, numpy_random_seed=0, torch_random_seed=0,
        fewshot_random_seed=0,
    )  # fmt: skip
    return out["samples"][name]


def _native_samples(model, tokenizer, task: Task) -> tuple[list[dict], NativeLM]:
    lm = NativeLM(
        Scorer(model, tokenizer.pad_token_id, batch_size=4, max_length=MAX_LENGTH), tokenizer, 0
    )
    return run_samples(task, lm, limit=None, seed=0), lm


def _by_doc(samples: list[dict]) -> dict[tuple, dict]:
    return {(s["doc_id"], s["filter"]): s for s in samples}


@pytest.mark.parametrize("file, name", [("tiny_mc.yaml", "tiny_mc"), ("tiny_text.yaml", "tiny_text"),
                                        ("tiny_gen.yaml", "tiny_gen")])  # fmt: skip
def test_native_lm_gives_hflm_results_document_by_document(
    task_files, tiny_model, tokenizer, file, name
):
    """multiple_choice (log-likelihood of each choice, acc and acc_norm), rolling
    log-likelihood of a local text dataset (word and byte perplexity terms) and
    generate_until with a regex filter (raw and filtered answers, exact_match): the
    same per document on our engine as on lm-eval's HFLM."""
    ours, _ = _native_samples(tiny_model, tokenizer, _task(task_files, file))
    theirs = _hflm_samples(tiny_model, tokenizer, task_files, name)
    ours, theirs = _by_doc(ours), _by_doc(theirs)
    assert ours.keys() == theirs.keys() and len(ours) >= 4
    for key, mine in ours.items():
        other = theirs[key]
        assert mine["metrics"] == other["metrics"]
        for metric in mine["metrics"]:
            assert mine[metric] == pytest.approx(other[metric], rel=1e-4, abs=1e-4), (key, metric)
        if name == "tiny_gen":
            assert (
                mine["resps"] == other["resps"]
                and mine["filtered_resps"] == other["filtered_resps"]
            )
        else:
            got = [r[0] if isinstance(r[0], float) else r[0][0] for r in mine["resps"]]
            want = [r[0] if isinstance(r[0], float) else r[0][0] for r in other["resps"]]
            assert got == pytest.approx(want, abs=2e-4), key
    if name == "tiny_gen":  # both filters ran; the regex one extracts digits or reports none
        assert {f for _, f in ours} == {"strict", "anything"}


def _perturbed(model):
    import copy

    other = copy.deepcopy(model)
    with torch.no_grad():
        for p in other.parameters():
            if p.dim() == 2:
                p.add_(torch.randn_like(p) * 0.02)
    return other


def _full_logprobs(model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return F.log_softmax(model(torch.tensor([ids])).logits[0].double(), dim=-1)


@pytest.mark.parametrize("file", ["tiny_mc.yaml", "tiny_text.yaml", "tiny_gen.yaml"])
def test_variant_rows_carry_kld_and_top1_from_the_full_logits(
    task_files, tiny_model, tokenizer, file
):
    """The baseline's rows carry its reference; a variant's rows carry KLD and top-1
    against it, equal to the KL divergence of the two models' full next-token
    distributions computed from ``model(...).logits`` on the same tokens."""
    task = _task(task_files, file)
    scorer = Scorer(tiny_model, tokenizer.pad_token_id, batch_size=4, max_length=MAX_LENGTH)
    base_rows, reference = evaluate_lm_eval(
        task, scorer, tokenizer, 0, "baseline", None, limit=None, seed=0
    )
    assert reference.keys() == {r.item_id for r in base_rows}
    assert all(r.kld is None for r in base_rows)
    variant = _perturbed(tiny_model)
    same, _ = evaluate_lm_eval(task, scorer, tokenizer, 0, "same", reference, limit=None, seed=0)
    assert all(r.kld == pytest.approx(0, abs=1e-4) and r.top1_agree == 1.0 for r in same)
    other = Scorer(variant, tokenizer.pad_token_id, batch_size=4, max_length=MAX_LENGTH,
                   reference_head=scorer.reference_head)  # fmt: skip
    rows, _ = evaluate_lm_eval(task, other, tokenizer, 0, "v", reference, limit=None, seed=0)
    assert [r.item_id for r in rows] == [r.item_id for r in base_rows]
    assert all(
        r.kld > 0 and 0 <= r.top1_agree <= 1 and r.slices[-1].startswith("ctx") for r in rows
    )
    if file == "tiny_mc.yaml":  # the gold choice's tokens, recomputed from the full logits
        doc = DOCS[0]
        ctx = tokenizer(doc["context"], add_special_tokens=False)["input_ids"]
        cont = tokenizer(
            doc["context"] + " " + doc["choices"][doc["answer"]], add_special_tokens=False
        )["input_ids"]
        ids, n = cont, len(cont) - len(ctx)
        base, mine = _full_logprobs(tiny_model, ids), _full_logprobs(variant, ids)
        at = slice(len(ids) - n - 1, len(ids) - 1)
        kld = (base[at].exp() * (base[at] - mine[at])).sum(-1)
        top1 = (base[at].argmax(-1) == mine[at].argmax(-1)).double()
        assert rows[0].kld == pytest.approx(float(kld.mean()), rel=1e-3)
        assert rows[0].top1_agree == pytest.approx(float(top1.mean()))
    if file == "tiny_gen.yaml":  # compared on the baseline's own answer
        assert all(len(reference[r.item_id].tokens) == r.n_tokens for r in rows)


def test_a_suite_entry_needs_only_the_file_the_metric_is_the_tasks_own(task_files):
    assert _task(task_files, "tiny_gen.yaml").metric == "exact_match"
    assert _task(task_files, "tiny_text.yaml").metric == "word_perplexity"
    assert _task(task_files, "tiny_mc.yaml", metric="acc_norm").metric == "acc_norm"


def test_several_filters_give_one_row_per_document(task_files, tiny_model, tokenizer):
    """A gsm8k-style task with two filters logs each document twice; the rows keep the
    first filter's answers (or the one named), one per document."""
    task = _task(task_files, "tiny_gen.yaml")
    samples, lm = _native_samples(tiny_model, tokenizer, task)
    rows = to_rows(task, samples, "v", lm)
    assert [r.item_id for r in rows] == [d["id"] for d in GEN_DOCS]
    strict = [s for s in samples if s["filter"] == "strict"]
    assert [r.prediction for r in rows] == [str(s["filtered_resps"][0]) for s in strict]
    other = to_rows(Task(**{**task.__dict__, "answer_filter": "anything"}), samples, "v")
    assert [r.prediction for r in other] == [
        str(s["filtered_resps"][0]) for s in samples if s["filter"] == "anything"
    ]
    with pytest.raises(InputError, match="no filter 'nope'.*strict, anything"):
        to_rows(Task(**{**task.__dict__, "answer_filter": "nope"}), samples, "v")


def test_sampled_generation_is_refused(tmp_path, tiny_model, tokenizer):
    path = _write(tmp_path, "sampled", GEN_YAML, GEN_DOCS)
    path.write_text(path.read_text().replace("do_sample: false", "do_sample: true"))
    with pytest.raises(InputError, match="decodes greedily"):
        _native_samples(tiny_model, tokenizer, _task(tmp_path, "sampled.yaml"))


def test_lm_eval_and_native_tasks_agree_item_by_item_in_a_run(task_files, tiny_model_dir, tmp_path):
    """The same multiple-choice items as a native task and as an lm-eval task: equal
    answers, log-probabilities, margins and KLD, for the baseline and two variants."""
    (task_files / "mc.jsonl").write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    suite = task_files / "mixed.yaml"
    suite.write_text(
        """name: mixed
tasks:
  - {name: via_lm_eval, kind: lm_eval, lm_eval: tiny_mc.yaml, slices: [arithmetic]}
  - {name: native, kind: multiple_choice, data: mc.jsonl, slices: [arithmetic], prompt: "{context}"}
"""
    )
    out = tmp_path / "run"
    code = main(["run", "--model", str(tiny_model_dir), "--suite", str(suite), "--out", str(out),
                 "--bits", "8,2", "--group-size", "32", "--threads", "1", "--no-progress"])  # fmt: skip
    assert code in (0, 1)
    items = pd.read_parquet(out / "items.parquet")
    assert set(items["variant"]) == {"baseline", "rtn-w8g32", "rtn-w2g32"}
    for variant, rows in items.groupby("variant"):
        ours = rows[rows["task"] == "native"].set_index("item_id")
        theirs = rows[rows["task"] == "via_lm_eval"].set_index("item_id").loc[ours.index]
        for column in ("correct", "correct_norm", "slices"):
            assert (ours[column].astype(str) == theirs[column].astype(str)).all(), (variant, column)
        for column in ("gold_logprob", "margin") + (
            ("kld", "top1_agree") if variant != "baseline" else ()
        ):
            assert ours[column].to_numpy(float) == pytest.approx(
                theirs[column].to_numpy(float), abs=1e-4
            )
    comparisons = pd.read_csv(out / "comparisons.csv")
    assert {"via_lm_eval", "native"} <= set(comparisons["task"])


def test_kv_cache_variants_run_lm_eval_tasks(task_files, tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    suite = task_files / "s.yaml"
    suite.write_text("name: s\ntasks: [{name: mc, kind: lm_eval, lm_eval: tiny_mc.yaml}]\n")
    code = main(["run", "--model", str(tiny_model_dir), "--suite", str(suite), "--out", str(out),
                 "--kv-bits", "2", "--bits", "8", "--no-progress", "--threads", "1"])  # fmt: skip
    assert code in (0, 1)
    rows = pd.read_parquet(out / "items.parquet")
    assert (rows[rows["variant"] == "kv2"]["kld"] > 0).all()


def test_unknown_metric_is_a_clear_error(task_files, tiny_model, tokenizer):
    task = _task(task_files, "tiny_mc.yaml")
    samples, _ = _native_samples(tiny_model, tokenizer, task)
    with pytest.raises(InputError, match="no metric 'f1'"):
        to_rows(Task(**{**task.__dict__, "metric": "f1"}), samples, "v")


def test_an_undeclared_metric_is_refused_at_suite_load(tmp_path):
    (tmp_path / "t.yaml").write_text("task: t\n")
    suite = tmp_path / "s.yaml"
    suite.write_text("name: x\ntasks: [{name: a, kind: lm_eval, lm_eval: t.yaml, metric: bleu}]\n")
    with pytest.raises(InputError, match="unknown metric 'bleu'.*declared metrics: acc"):
        load_suite(suite)


def test_rolling_metrics_become_token_weighted_perplexity_rows():
    """lm-eval logs (log-likelihood, words) per document for word_perplexity: the rows
    carry them as nll and n_tokens, so the perplexity is weighted as lm-eval's
    weighted_perplexity aggregation weights it."""
    from harness.metrics import get_metric
    from harness.store import rows_to_frame

    task = Task(name="wiki", kind="lm_eval", data=None, source="wiki", metric="word_perplexity")
    samples = [{"doc_id": i, "doc": {}, "target": "", "filter": "none",
                "word_perplexity": (-ll, words), "byte_perplexity": (-ll, 5 * words)}
               for i, (ll, words) in enumerate([(30.0, 10), (50.0, 20)])]  # fmt: skip
    rows = to_rows(task, samples, "v")
    assert [(r.nll, r.n_tokens) for r in rows] == [(30.0, 10), (50.0, 20)]
    value = get_metric("word_perplexity").value(rows_to_frame(rows))
    assert value == pytest.approx(math.exp(80.0 / 30)) and all(r.correct is None for r in rows)


def test_missing_lm_eval_file_is_a_suite_error(tmp_path):
    suite = tmp_path / "s.yaml"
    suite.write_text("name: x\ntasks: [{name: a, kind: lm_eval, lm_eval: nope.yaml}]\n")
    with pytest.raises(InputError, match="lm-eval task file not found"):
        load_suite(suite)
    suite.write_text("name: x\ntasks: [{name: a, kind: lm_eval}]\n")
    with pytest.raises(InputError, match="missing required key 'lm_eval'"):
        load_suite(suite)
