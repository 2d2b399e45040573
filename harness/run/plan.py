"""What a run still has to do: one :class:`WorkUnit` per variant x task not yet stored.

A plan is plain data (names and counts), computed from the run's variants, its suite and
what the store already holds; the sweep (or a distributed executor) consumes it in order,
baseline first.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.engine.kinds import kind_of
from harness.records import Suite, Task, Variant
from harness.store import RunStore


@dataclass(frozen=True)
class WorkUnit:
    variant: str
    task: str
    requests: (
        int  # progress units: scored requests, plus one per decoded item (0: a whole-task kind)
    )


def plan(variants: list[Variant], suite: Suite, store: RunStore, prepared: dict) -> list[WorkUnit]:
    """The units still to run, variants in order, each variant's tasks in suite order."""
    return [WorkUnit(variant.name, task.name, request_count(task, prepared.get(task.name)))
            for variant in variants for task in suite.tasks if not done(store, variant, task)]  # fmt: skip


def request_count(task: Task, items: list | None) -> int:
    """Progress units of a task's prepared items (none for a kind that runs tasks whole)."""
    if not kind_of(task).itemized or items is None:
        return 0
    return sum(len(item.requests) for item in items) + (len(items) if task.decodes else 0)


def done(store: RunStore, variant: Variant, task: Task) -> bool:
    """Stored: the rows, and for the baseline also its references."""
    if not store.has(variant.name, task.name):
        return False
    return not variant.is_baseline or store.has_reference(task.name)


def tasks_of(work: list[WorkUnit], variant: str) -> list[str]:
    return [unit.task for unit in work if unit.variant == variant]
