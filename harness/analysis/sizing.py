"""``qharness plan``: before spending compute, what a suite can see — per task x slice and
gate rule, the items present, the minimum detectable effect and the items needed to
resolve the tolerance (see :mod:`harness.analysis.power`) — from a model's tokenizer alone or
from a stored run's baseline."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from harness.analysis.policy import load_policy, parse_policy
from harness.analysis.power import SlicePower, slice_power
from harness.errors import InputError
from harness.records import ModelSpec

LOWER_BOUND_NOTE = ("accuracy and flip rules assume the baseline gets every item right: a lower "
                    "bound on the MDE and the items needed (--from RUN uses the measured accuracy)")  # fmt: skip


def plan_from_model(suite_path: Path, spec: ModelSpec, policy_path: Path | None, seed: int = 0):
    """The suite's slices as the model's tokenizer cuts them (length buckets included);
    no weights are loaded and nothing is evaluated."""
    from harness.data.suites import load_items, load_suite
    from harness.engine.kinds import kind_of
    from harness.engine.tasks import prepare
    from harness.model.load import load_tokenizer, prefix_token_id

    suite = load_suite(suite_path)
    tokenizer = load_tokenizer(spec)
    prefix = prefix_token_id(tokenizer)
    rows, metrics = [], {}
    for task in suite.tasks:
        if not kind_of(task).itemized:
            continue  # the kind loads its own documents
        items = load_items(task)
        chosen = items[: task.limit] if task.limit else items
        metrics[task.name] = task.metric
        for item in prepare(task, chosen, tokenizer, prefix, items, seed):
            rows.append({"variant": "baseline", "task": task.name, "item_id": item.item_id,
                         "slices": list(item.slices), "correct": True, "gold_logprob": 0.0, "n_tokens": 1,
                         "margin": math.nan})  # fmt: skip
    policy = (
        load_policy(policy_path) if policy_path else parse_policy(suite.gate, f"suite {suite_path}")
    )
    powers = slice_power(pd.DataFrame(rows), metrics, policy)
    return (
        powers,
        policy,
        f"suite {suite.name} v{suite.version}, tokenizer of {spec.source}",
        LOWER_BOUND_NOTE,
    )


def plan_from_run(run_dir: Path, policy_path: Path | None):
    """The run's own baseline (its measured accuracy) and its variants' spread."""
    from harness.analysis.analyse import resolve_policy
    from harness.analysis.stats import compare
    from harness.store import RunStore

    store = RunStore(run_dir)
    manifest = store.manifest()
    items = store.load_items()
    if items.empty or "baseline" not in set(items["variant"]):
        raise InputError(f"{run_dir} has no baseline results yet")
    policy = resolve_policy(store, policy_path, record=False)
    metrics = manifest.metrics
    comparisons = compare(items, metrics, alpha=policy.alpha, min_items=1)
    powers = slice_power(items[items["variant"] == "baseline"], metrics, policy, comparisons)
    suite = manifest.suite
    return (
        powers,
        policy,
        f"suite {suite.name} v{suite.version}, run {run_dir}",
        "",
    )


def format_plan(powers: list[SlicePower], policy, source: str, note: str) -> str:
    """One line per task x slice x rule, the slices that cannot resolve marked."""
    lines = [
        f"Plan for {source}: alpha {policy.alpha} ({policy.mode} mode), 80% power.",
        *([note] if note else []),
    ]
    lines.append(
        f"{'task':<22} {'slice':<14} {'items':>6}  {'rule':<24} {'MDE':>8} {'to resolve':>10} {'for safety':>10}"
    )
    for p in powers:
        kind, op, tol = p.rule.split()[:3]
        percent = tol.endswith("%")
        mde = "n/a" if not math.isfinite(p.mde) else f"{p.mde:.1%}" if percent else f"{p.mde:.3g}"
        need = str(p.items_needed) if p.items_needed else "n/a"
        safety = "" if p.items_for_safety is None else str(p.items_for_safety)
        flag = "" if p.resolves or not p.items_needed else "  cannot resolve"
        lines.append(f"{p.task[:22]:<22} {p.slice[:14]:<14} {p.n:>6}  {f'{kind} {op} {tol}'[:24]:<24} {mde:>8} "
                     f"{need:>10} {safety:>10}{flag}")  # fmt: skip
    known = [p for p in powers if p.items_needed]
    blind = sum(not p.resolves for p in known)
    lines.append(f"{blind} of {len(known)} rule x slice pairs cannot resolve their tolerance (to resolve: "
                 "the items at which twice the tolerance fails with 80% power; for safety: the items at "
                 "which --gate-mode safety passes a loss of half the tolerance with 80% power).")  # fmt: skip
    return "\n".join(lines)
