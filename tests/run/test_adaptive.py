"""Adaptive stopping: balanced rounds, stopping a variant everywhere only on a settled
failure, complete rows for a variant that keeps passing, no pass from partial rows."""

from __future__ import annotations

import copy
import dataclasses
import json

from harness.analysis.policy import parse_policy
from harness.analysis.stats import family_size
from harness.data.suites import load_items
from harness.engine.scorer import ReferenceHead, Scorer
from harness.engine.tasks import PreparedItem, evaluate_task, prepare
from harness.quant import make_config, quantize_
from harness.records import Task
from harness.run.adaptive import (
    CHUNK,
    balanced_order,
    evaluate_adaptive,
    item_tokens,
    round_chunks,
    settled_failure,
)
from harness.store import rows_to_frame
from tests.synthetic import make_items


def test_balanced_order_takes_slice_groups_in_turn():
    items = [PreparedItem(str(i), (s,), [], "") for i, s in enumerate("aaaabbc")]
    order = balanced_order(items)
    assert [items[i].slices[0] for i in order] == list("abcabaa")
    assert sorted(order) == list(range(7))


def test_a_collapse_settles_and_noise_does_not():
    policy = parse_policy(None, "")
    items = make_items(2, {"bad": {"drop": {"arithmetic": 0.9}}, "fine": {"noise": 0.0}}, n=40)
    base = items[(items["variant"] == "baseline") & (items["task"] == "mc_arithmetic")]
    from harness.records import ItemResult

    def rows(name):
        frame = items[(items["variant"] == name) & (items["task"] == "mc_arithmetic")]
        return [ItemResult(**{**r, "slices": tuple(r["slices"])}) for r in frame.to_dict("records")]

    family = family_size(items[items["variant"] == "baseline"], policy.min_items)
    assert family == 4 * 2  # four tasks x (all, declared slice); 8 fragile items < min_items
    assert settled_failure(rows("bad"), base, "acc", policy, family) is not None
    assert settled_failure(rows("fine"), base, "acc", policy, family) is None
    assert settled_failure(rows("bad")[: policy.min_items - 1], base, "acc", policy, family) is None


def test_the_stopping_alpha_is_spread_over_the_whole_family():
    """A failure settled against one task's own slices may not be settled once alpha/10
    is spread over every comparison the final gate makes (the variant's whole family)."""
    policy = parse_policy(None, "")
    items = make_items(4, {"mid": {"drop": {"arithmetic": 0.3}}}, n=60)
    base = items[(items["variant"] == "baseline") & (items["task"] == "mc_arithmetic")]
    frame = items[(items["variant"] == "mid") & (items["task"] == "mc_arithmetic")]
    from harness.records import ItemResult

    rows = [ItemResult(**{**r, "slices": tuple(r["slices"])}) for r in frame.to_dict("records")]
    assert settled_failure(rows, base, "acc", policy, family=1) is not None
    assert settled_failure(rows, base, "acc", policy, family=1000) is None


def mc_task(tmp_path, n=3 * CHUNK + 5):
    data = tmp_path / "mc.jsonl"
    data.write_text("".join(json.dumps({"id": f"i{i}", "context": f"{i} and", "choices": [f" {i}", " x", " y"],
                                        "answer": 0, "slices": ["odd" if i % 2 else "even"]}) + "\n"
                            for i in range(n)))  # fmt: skip
    return Task(
        name="mc",
        kind="multiple_choice",
        data=data,
        prompt="{context}",
        metric="acc",
        slices=("general",),
    )


def prepared_mc(tmp_path, tokenizer, name="mc", n=3 * CHUNK + 5):
    task = mc_task(tmp_path, n)
    task = dataclasses.replace(task, name=name)
    items = prepare(
        task, load_items(task), tokenizer, tokenizer.bos_token_id, load_items(task), seed=0
    )
    return task, items


def test_round_chunks_cut_the_balanced_order_by_tokens_and_items(tmp_path, tokenizer):
    _, items = prepared_mc(tmp_path, tokenizer)
    order = balanced_order(items)
    for budget, cap in [(10**6, CHUNK), (40, CHUNK), (1, CHUNK), (10**6, 5)]:
        chunks = round_chunks(items, budget, cap)
        assert [i for chunk in chunks for i in chunk] == order
        for chunk in chunks:
            assert 1 <= len(chunk) <= cap
            assert len(chunk) == 1 or sum(item_tokens(items[i]) for i in chunk) <= budget
    assert [len(c) for c in round_chunks(items, 1, CHUNK)] == [1] * len(items)
    assert item_tokens(items[0]) == sum(len(c) + len(x) for c, x in items[0].requests) > 0


def test_a_settled_failure_stops_the_variant_on_every_task_and_passing_rows_are_complete(
    tmp_path, tiny_model, tokenizer
):
    tasks, prepared = [], {}
    for name, n in [("mc", 3 * CHUNK + 5), ("mc_small", CHUNK + 4)]:
        (tmp_path / name).mkdir()
        task, items = prepared_mc(tmp_path / name, tokenizer, name, n)
        tasks.append(task)
        prepared[name] = items
    base_scorer = Scorer(tiny_model, tokenizer.pad_token_id, batch_size=8, max_length=256)
    baseline, references = [], {}
    for task in tasks:
        rows, references[task.name] = evaluate_task(
            task, prepared[task.name], base_scorer, tokenizer, "baseline", None
        )
        baseline += rows
    baseline = rows_to_frame(baseline)
    variant = copy.deepcopy(tiny_model)
    quantize_(variant, make_config("rtn", bits=2, group_size=32))
    scorer = Scorer(variant, tokenizer.pad_token_id, batch_size=8, max_length=256,
                    reference_head=ReferenceHead(tiny_model))  # fmt: skip

    def run(policy):
        calls, finished, settled = [], {}, []

        def evaluate(task, chunk):
            calls.append((task.name, len(chunk)))
            return evaluate_task(task, chunk, scorer, tokenizer, "w2", references[task.name])[0]

        def finish(task, rows, record):
            assert task.name not in finished  # once per task
            finished[task.name] = (rows, record)

        found = evaluate_adaptive(
            tasks, prepared, evaluate, baseline, policy, finish, settled.append
        )
        assert settled == ([found] if found else [])
        return found, calls, finished

    strict = parse_policy(
        {"defaults": False, "rules": [{"kind": "max_kld", "tolerance": 1e-9}]}, "test"
    )
    found, calls, finished = run(strict)
    assert found is not None and found.severity == "fail"
    first_round = {t.name: len(round_chunks(prepared[t.name])[0]) for t in tasks}
    assert calls == list(first_round.items())  # one round: every task had its turn, then stop
    assert set(finished) == {"mc", "mc_small"}
    for name, (rows, record) in finished.items():
        assert record == {"evaluated": first_round[name], "of": len(prepared[name]),
                          "stopped_by": found.message}  # fmt: skip
        assert len(rows) == first_round[name] < len(prepared[name])
        odd = sum("odd" in r.slices for r in rows)
        assert abs(odd - (len(rows) - odd)) <= 1  # slices stay balanced

    lenient = parse_policy(
        {"defaults": False, "rules": [{"kind": "max_drop", "tolerance": 1.0}]}, "test"
    )
    found, calls, finished = run(lenient)
    assert found is None
    for task in tasks:
        rows, record = finished[task.name]
        assert record == {"evaluated": len(prepared[task.name]), "of": len(prepared[task.name]),
                          "stopped_by": None}  # fmt: skip
        full, _ = evaluate_task(
            task, prepared[task.name], scorer, tokenizer, "w2", references[task.name]
        )
        by_id = {r.item_id: r for r in full}
        assert sorted(by_id) == sorted(r.item_id for r in rows)
        for r in rows:  # the same items; batch neighbours differ, so floats agree to rounding
            assert (r.correct, r.prediction) == (
                by_id[r.item_id].correct,
                by_id[r.item_id].prediction,
            )
            assert (
                abs(r.nll - by_id[r.item_id].nll) < 1e-4
                and abs(r.kld - by_id[r.item_id].kld) < 1e-4
            )
