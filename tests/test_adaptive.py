"""Adaptive stopping: balanced order, stopping only on a settled failure, and unchanged
rows for a variant that keeps passing."""

from __future__ import annotations

import copy
import json

from harness.adaptive import CHUNK, balanced_order, evaluate_adaptive, settled_failure
from harness.evaluate.scorer import Scorer
from harness.evaluate.tasks import PreparedItem, evaluate_task, prepare
from harness.gate import parse_policy
from harness.methods import make_config, quantize_
from harness.records import Task
from harness.store import rows_to_frame
from harness.suites import load_items
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

    assert settled_failure(rows("bad"), base, "acc", policy) is not None
    assert settled_failure(rows("fine"), base, "acc", policy) is None
    assert settled_failure(rows("bad")[: policy.min_items - 1], base, "acc", policy) is None


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


def test_adaptive_stops_a_settled_failure_and_leaves_passing_rows_unchanged(
    tmp_path, tiny_model, tokenizer
):
    task = mc_task(tmp_path)
    items = prepare(
        task, load_items(task), tokenizer, tokenizer.bos_token_id, load_items(task), seed=0
    )
    base_scorer = Scorer(tiny_model, tokenizer.pad_token_id, batch_size=8, max_length=256, topk=16)
    base_rows, reference = evaluate_task(task, items, base_scorer, tokenizer, "baseline", None)
    baseline = rows_to_frame(base_rows)
    variant = copy.deepcopy(tiny_model)
    quantize_(variant, make_config("rtn", bits=2, group_size=32))
    scorer = Scorer(variant, tokenizer.pad_token_id, batch_size=8, max_length=256, topk=16)
    full, _ = evaluate_task(task, items, scorer, tokenizer, "w2", reference)

    strict = parse_policy(
        {"defaults": False, "rules": [{"kind": "max_kld", "tolerance": 1e-9}]}, "test"
    )
    rows, record = evaluate_adaptive(
        task, items, scorer, tokenizer, "w2", reference, baseline, strict
    )
    assert record["evaluated"] == CHUNK < record["of"] == len(items) and record["stopped_by"]
    assert sum("odd" in r.slices for r in rows) == sum("even" in r.slices for r in rows)  # balanced

    lenient = parse_policy(
        {"defaults": False, "rules": [{"kind": "max_drop", "tolerance": 1.0}]}, "test"
    )
    rows, record = evaluate_adaptive(
        task, items, scorer, tokenizer, "w2", reference, baseline, lenient
    )
    assert record == {"evaluated": len(items), "of": len(items), "stopped_by": None}
    by_id = {r.item_id: r for r in full}
    assert len(rows) == len(full)
    for r in rows:  # the same items; batch neighbours differ, so floats agree to rounding
        assert (r.correct, r.prediction) == (by_id[r.item_id].correct, by_id[r.item_id].prediction)
        assert abs(r.nll - by_id[r.item_id].nll) < 1e-4 and abs(r.kld - by_id[r.item_id].kld) < 1e-4
