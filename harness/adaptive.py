"""Adaptive stopping (``--adaptive``): evaluate a variant on a task in slice-balanced
chunks and stop once the gate's verdict on it is settled — a collapsed 2-bit variant
needs a few dozen items, not all of them, to fail.

Only a *failure* settles early, and only one that holds at a stricter level
(``alpha / STOP_FACTOR``): the gate's intervals are computed as if the data were seen
once, and looking after every chunk would otherwise raise the false-failure rate. A
variant that keeps passing is evaluated on every item, so its numbers are unchanged.
"""

from __future__ import annotations

import dataclasses
from itertools import zip_longest

import pandas as pd

from harness.evaluate.tasks import PreparedItem, evaluate_task
from harness.gate import Policy, apply_policy
from harness.records import Finding, ItemResult
from harness.stats import compare
from harness.store import rows_to_frame

CHUNK = 16  # items evaluated between two looks
STOP_FACTOR = 10


def balanced_order(items: list[PreparedItem]) -> list[int]:
    """Item indices taking the slice groups in turn, so every prefix keeps slices balanced."""
    groups: dict[tuple[str, ...], list[int]] = {}
    for i, item in enumerate(items):
        groups.setdefault(item.slices, []).append(i)
    return [i for round_ in zip_longest(*groups.values()) for i in round_ if i is not None]


def settled_failure(
    rows: list[ItemResult], baseline: pd.DataFrame, metric: str, policy: Policy
) -> Finding | None:
    """A failing finding on the rows so far that already holds at ``alpha / STOP_FACTOR``."""
    if len(rows) < policy.min_items:
        return None
    frame = pd.concat([baseline, rows_to_frame(rows)], ignore_index=True)
    strict = dataclasses.replace(policy, alpha=policy.alpha / STOP_FACTOR)
    comparisons = compare(
        frame, {rows[0].task: metric}, alpha=strict.alpha, n_boot=1000, min_items=policy.min_items
    )
    return next((f for f in apply_policy(strict, comparisons) if f.severity == "fail"), None)


def evaluate_adaptive(task, items: list[PreparedItem], scorer, tokenizer, variant: str, reference,
                      baseline: pd.DataFrame, policy: Policy, on_progress=None) -> tuple[list[ItemResult], dict]:  # fmt: skip
    """Evaluate ``items`` chunk by chunk until a failure is settled; returns the rows and
    a record of how many items were evaluated (and why it stopped)."""
    order = balanced_order(items)
    rows: list[ItemResult] = []
    stopped_by = None
    for start in range(0, len(order), CHUNK):
        chunk = [items[i] for i in order[start : start + CHUNK]]
        new, _ = evaluate_task(
            task, chunk, scorer, tokenizer, variant, reference, on_progress=on_progress
        )
        rows += new
        finding = (
            settled_failure(rows, baseline, task.metric, policy)
            if start + CHUNK < len(order)
            else None
        )
        if finding is not None:
            stopped_by = finding.message
            break
    return rows, {"evaluated": len(rows), "of": len(items), "stopped_by": stopped_by}
