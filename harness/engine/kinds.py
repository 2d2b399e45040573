"""Task kinds: what a suite entry of each ``kind`` needs, and how its tasks are evaluated.

The harness's own kinds (``perplexity``, ``multiple_choice``, ``generate``; see
:mod:`harness.engine.tasks`) read JSONL items that the harness renders and scores item by
item. Other kinds plug in by calling :func:`register_kind` from a module of this package:
such a kind names its own source (a suite key mapped to ``Task.source``), loads its own
documents and evaluates a task whole through the same scorer. Nothing outside a kind's
module names it; the modules of :mod:`harness.engine` are imported once to find them.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from harness.records import Task
from harness.registry import Registry


@dataclass(frozen=True)
class TaskKind:
    name: str
    default_metric: str
    metrics: tuple[str, ...] = ()  # the metrics its tasks may name (empty: any registered one)
    source_key: str = "data"  # the suite key naming what a task reads
    keys: dict[str, str] = field(default_factory=dict)  # its own suite keys -> Task fields
    # a kind that evaluates tasks whole: its source resolved against the suite's folder
    # (-> source, the metric it declares), and (task, scorer, tokenizer, prefix, variant,
    # reference, limit, seed, on_progress) -> (rows, the baseline's references)
    resolve: Callable[[str, Path, str], tuple[str, str | None]] | None = None
    evaluate: Callable | None = None

    @property
    def itemized(self) -> bool:
        """Its items are the harness's JSONL items, prepared and scored item by item."""
        return self.evaluate is None


KINDS: Registry[TaskKind] = Registry("task kind")
_found = False


def register_kind(kind: TaskKind) -> TaskKind:
    KINDS.register(kind.name, kind)
    return kind


def _find_kinds() -> None:
    global _found
    if not _found:
        _found = True
        package = importlib.import_module("harness.engine")
        for module in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"harness.engine.{module.name}")


def kind_names() -> list[str]:
    _find_kinds()
    return KINDS.names()


def get_kind(name: str) -> TaskKind:
    """The registered kind (``UnknownName``, naming the known ones, otherwise)."""
    _find_kinds()
    return KINDS.get(name)


def kind_of(task: Task) -> TaskKind:
    return get_kind(task.kind)
