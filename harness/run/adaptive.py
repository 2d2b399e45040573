"""Adaptive stopping (``--adaptive``): answer the gate's question for a variant at the
least cost. A collapsed 2-bit variant needs a few dozen items, not all of them, to fail.

A variant is evaluated in rounds. Each round gives every task — so every slice — its
next chunk of about the same compute (``ROUND_TOKENS`` request tokens, at least one item),
taken in an order that alternates the item slice groups within the task. After each round
every task is checked for a settled failure; the first one decides the variant (it fails
the gate), so its evaluation stops on every slice and the rows kept are the balanced
prefix evaluated so far.

Only a *failure* settles early, and only one that holds at a stricter level
(``alpha / STOP_FACTOR``, spread over the variant's whole family of task x slice
comparisons, as the final gate spreads ``alpha``): the gate's intervals are computed as
if the data were seen once, and looking after every round would otherwise raise the
false-failure rate. A
variant that keeps passing is evaluated on every item, so its numbers are those of a full
run. A variant stopped early can never pass a later re-gating of its partial rows
(:func:`partial_failures`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from itertools import zip_longest
from typing import TYPE_CHECKING

import pandas as pd

from harness.analysis.gate import apply_policy
from harness.analysis.policy import Policy
from harness.analysis.stats import compare, family_size
from harness.records import Finding, ItemResult, Task
from harness.store import rows_to_frame

if TYPE_CHECKING:
    from harness.engine.tasks import PreparedItem

ROUND_TOKENS = 512  # request tokens each task gets per round (always at least one item)
CHUNK = 16  # at most this many items of one task per round
STOP_FACTOR = 10


def balanced_order(items: list[PreparedItem]) -> list[int]:
    """Item indices taking the slice groups in turn, so every prefix keeps slices balanced."""
    groups: dict[tuple[str, ...], list[int]] = {}
    for i, item in enumerate(items):
        groups.setdefault(item.slices, []).append(i)
    return [i for round_ in zip_longest(*groups.values()) for i in round_ if i is not None]


def item_tokens(item: PreparedItem) -> int:
    """The request tokens an item costs (context and continuation of every request)."""
    return sum(len(context) + len(continuation) for context, continuation in item.requests)


def round_chunks(items: list[PreparedItem], budget: int = ROUND_TOKENS, cap: int = CHUNK) -> list[list[int]]:  # fmt: skip
    """The balanced order cut into per-round chunks of at most ``budget`` request tokens
    and ``cap`` items (an item above the budget makes a chunk of its own)."""
    chunks: list[list[int]] = []
    current: list[int] = []
    tokens = 0
    for i in balanced_order(items):
        cost = item_tokens(items[i])
        if current and (len(current) == cap or tokens + cost > budget):
            chunks.append(current)
            current, tokens = [], 0
        current.append(i)
        tokens += cost
    return [*chunks, current] if current else chunks


def settled_failure(
    rows: list[ItemResult], baseline: pd.DataFrame, metric: str, policy: Policy, family: int
) -> Finding | None:
    """A failing finding on the rows so far that already holds at ``alpha / STOP_FACTOR``,
    Bonferroni-spread over the variant's whole ``family`` of comparisons (every task and
    slice the final gate will judge), as the final gate spreads ``alpha``."""
    if len(rows) < policy.min_items:
        return None
    frame = pd.concat([baseline, rows_to_frame(rows)], ignore_index=True)
    # harm shown: a failure in either gate mode (safety mode's "not enough evidence" is
    # no reason to stop: more items are exactly what it needs)
    strict = dataclasses.replace(policy, alpha=policy.alpha / STOP_FACTOR, mode="harm")
    comparisons = compare(frame, {rows[0].task: metric}, alpha=strict.alpha,
                          min_items=policy.min_items, family=family)  # fmt: skip
    return next((f for f in apply_policy(strict, comparisons) if f.severity == "fail"), None)


def evaluate_adaptive(
    tasks: list[Task],
    prepared: dict[str, list[PreparedItem]],
    evaluate: Callable[[Task, list[PreparedItem]], list[ItemResult]],
    baseline: pd.DataFrame,
    policy: Policy,
    finish: Callable[[Task, list[ItemResult], dict], None],
    on_settled: Callable[[Finding], None] = lambda finding: None,
) -> Finding | None:
    """Evaluate one variant's ``tasks`` round by round until a failure is settled.

    ``evaluate(task, items)`` scores a chunk and returns its rows; ``finish(task, rows,
    record)`` is called once per task with its final rows and ``{"evaluated", "of",
    "stopped_by"}`` — when the task is complete, or, for every unfinished task, when the
    variant's failure settles, right after ``on_settled(finding)``. Returns the settling
    finding (None: evaluated in full).
    """
    chunks = {task.name: round_chunks(prepared[task.name]) for task in tasks}
    rows: dict[str, list[ItemResult]] = {task.name: [] for task in tasks}
    references = {task.name: baseline[baseline["task"] == task.name] for task in tasks}
    family = family_size(baseline, policy.min_items)

    def record(task: Task, stopped_by: str | None) -> dict:
        return {"evaluated": len(rows[task.name]), "of": len(prepared[task.name]),
                "stopped_by": stopped_by}  # fmt: skip

    for task in tasks:
        if not chunks[task.name]:
            finish(task, [], record(task, None))
    for round_ in range(max((len(c) for c in chunks.values()), default=0)):
        active = [task for task in tasks if round_ < len(chunks[task.name])]
        for task in active:
            items = prepared[task.name]
            rows[task.name] += evaluate(task, [items[i] for i in chunks[task.name][round_]])
        unfinished = [task for task in tasks if round_ + 1 < len(chunks[task.name])]
        settled = None
        if unfinished:  # nothing left to save once every task is complete
            settled = next(
                filter(
                    None,
                    (
                        settled_failure(rows[t.name], references[t.name], t.metric, policy, family)
                        for t in active
                    ),
                ),  # fmt: skip
                None,
            )
        for task in active:
            if round_ + 1 == len(chunks[task.name]):
                finish(task, rows[task.name], record(task, None))
        if settled is not None:
            on_settled(settled)  # recorded before any partial rows are stored
            for task in unfinished:
                finish(task, rows[task.name], record(task, settled.message))
            return settled
    return None
