"""The plan: exactly the variant x task units the store does not hold yet, with their
progress units counted from the prepared items."""

from __future__ import annotations

import torch

from harness.data.suites import load_items, load_suite
from harness.engine.tasks import prepare
from harness.records import ItemResult, Reference, Variant
from harness.run.plan import plan, request_count, tasks_of
from harness.store import RunStore


def _row(variant: str, task: str) -> ItemResult:
    return ItemResult(variant=variant, task=task, item_id="1", slices=(), correct=True, correct_norm=None,
                      score=1.0, nll=1.0, gold_logprob=-1.0, n_tokens=1, kld=None, top1_agree=None,
                      margin=None, prediction="", target="")  # fmt: skip


def test_plan_lists_what_is_not_stored_and_counts_requests(tiny_suite, tokenizer, tmp_path):
    suite = load_suite(tiny_suite)
    prepared = {
        t.name: prepare(t, load_items(t), tokenizer, 0, load_items(t), 0) for t in suite.tasks
    }
    store = RunStore.open(tmp_path / "run", {"model": "m"})
    variants = [Variant("baseline"), Variant("v", kv_bits=4)]
    names = [t.name for t in suite.tasks]
    assert [(u.variant, u.task) for u in plan(variants, suite, store, prepared)] == [
        (v.name, n) for v in variants for n in names
    ]
    store.append("baseline", "mc", [_row("baseline", "mc")])  # rows, but no reference yet
    store.append("v", "text", [_row("v", "text")])
    work = plan(variants, suite, store, prepared)
    assert tasks_of(work, "baseline") == names and tasks_of(work, "v") == ["mc", "gen"]
    store.save_reference(
        "mc", {"1": Reference(torch.zeros(1, 4), torch.zeros(1, dtype=torch.int32))}
    )
    assert tasks_of(plan(variants, suite, store, prepared), "baseline") == ["text", "gen"]
    mc, gen = (next(t for t in suite.tasks if t.name == n) for n in ("mc", "gen"))
    assert request_count(mc, prepared["mc"]) == sum(len(i.requests) for i in prepared["mc"]) == 15
    assert request_count(gen, prepared["gen"]) == 2 * len(
        prepared["gen"]
    )  # a scoring pass + decoding
    assert {u.requests for u in work if u.task == "mc"} == {15}
