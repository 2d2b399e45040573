"""Task suites as data: a YAML suite file naming JSONL item files.

Every problem is reported as an :class:`InputError` that names the file (and line,
for JSONL) so the CLI can print one readable message and exit 2.
"""

from __future__ import annotations

import dataclasses
import json
import re
import string
from collections.abc import Iterator
from pathlib import Path

from harness.engine.kinds import TaskKind, get_kind, kind_names, kind_of
from harness.errors import InputError
from harness.metrics import METRICS
from harness.records import Suite, Task
from harness.registry import UnknownName, did_you_mean
from harness.yamlfile import read_yaml

_SUITE_KEYS = {"name", "version", "tasks", "description", "gate"}
_TASK_FIELDS = {f.name: f for f in dataclasses.fields(Task)}


def load_suite(path: str | Path) -> Suite:
    """Read and validate a suite file; data paths resolve relative to it."""
    path = Path(path)
    raw = read_yaml(path, "suite")
    if not isinstance(raw, dict):
        raise InputError(f"{path}: a suite must be a mapping with 'name', 'version' and 'tasks'")
    _check_keys(raw, _SUITE_KEYS, f"{path}")
    for key in ("name", "tasks"):
        if key not in raw:
            raise InputError(f"{path}: missing required key {key!r}")
    if not isinstance(raw["tasks"], list) or not raw["tasks"]:
        raise InputError(f"{path}: 'tasks' must be a non-empty list")
    tasks = tuple(_parse_task(entry, i, path) for i, entry in enumerate(raw["tasks"]))
    names = [t.name for t in tasks]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise InputError(f"{path}: duplicate task name(s): {', '.join(duplicated)}")
    for task in tasks:
        if kind_of(task).itemized:
            load_items(task)  # validates the data up front, before any model is loaded
    if raw.get("gate") is not None:
        from harness.analysis.policy import parse_policy

        parse_policy(raw["gate"], str(path))  # validated now, applied after the run
    return Suite(
        name=str(raw["name"]),
        version=str(raw.get("version", "0")),
        tasks=tasks,
        path=path,
        gate=raw.get("gate"),
    )


def _check_keys(raw: dict, allowed: set[str], where: str) -> None:
    for key in raw:
        if key not in allowed:
            hint = did_you_mean(str(key), sorted(allowed))
            raise InputError(f"{where}: unknown key {key!r}{hint}")


def _parse_task(entry: object, index: int, path: Path) -> Task:
    where = f"{path}: task {index + 1}"
    if not isinstance(entry, dict):
        raise InputError(f"{where}: each task must be a mapping")
    if "name" in entry:
        where = f"{path}: task {entry['name']!r}"
    for key in ("name", "kind"):
        if key not in entry:
            raise InputError(f"{where}: missing required key {key!r}")
    kind = _kind(entry["kind"], where)
    _check_keys(entry, (set(_TASK_FIELDS) - _INTERNAL_FIELDS) | set(kind.keys), where)
    if kind.source_key not in entry:
        raise InputError(f"{where}: missing required key {kind.source_key!r}")
    _check_types(entry, kind, where)
    values = {kind.keys.get(key, key): value for key, value in entry.items()}
    for key in ("slices", "stop"):
        if key in values:
            if isinstance(values[key], str):
                values[key] = [values[key]]
            if not isinstance(values[key], list) or not all(
                isinstance(v, str) for v in values[key]
            ):
                raise InputError(f"{where}: {key!r} must be a list of strings")
            values[key] = tuple(values[key])
    for key in ("fewshot", "max_new_tokens", "window", "stride", "limit"):
        least = 1 if key in ("max_new_tokens", "window") else 0
        if key in values and (
            not isinstance(values[key], int) or isinstance(values[key], bool) or values[key] < least
        ):
            raise InputError(f"{where}: {key!r} must be an integer of at least {least}, "
                             f"not {str(values[key])[:40]!r}")  # fmt: skip
    if values.get("stride", 0) > values.get("window", _TASK_FIELDS["window"].default):
        raise InputError(f"{where}: 'stride' must not exceed 'window' (tokens would go unscored)")
    if values.get("answer_regex") is not None:
        try:
            re.compile(values["answer_regex"])
        except re.error as exc:
            raise InputError(
                f"{where}: 'answer_regex' is not a valid regular expression ({exc})"
            ) from None
    _resolve_sources(values, kind, path, where)
    values["name"] = str(values["name"])
    _check_metric(values, kind, where)
    return Task(**values)


def _kind(name: object, where: str) -> TaskKind:
    try:
        return get_kind(str(name))
    except UnknownName:
        known = kind_names()
        hint = did_you_mean(str(name), known)
        raise InputError(
            f"{where}: unknown kind {name!r}{hint} (choose from {', '.join(known)})"
        ) from None


def _resolve_sources(values: dict, kind: TaskKind, path: Path, where: str) -> None:
    """Data files resolve against the suite's folder; a kind with its own source resolves it."""
    if kind.itemized:
        data = (path.parent / str(values["data"])).resolve()
        if not data.is_file():
            raise InputError(f"{where}: data file not found: {data}")
        values["data"] = data
    else:
        values["source"], declared = kind.resolve(str(values["source"]), path.parent, where)
        values["data"] = None
        if declared is not None:
            values.setdefault("metric", declared)
    if values.get("fewshot_data") is not None:
        pool = (path.parent / str(values["fewshot_data"])).resolve()
        if not pool.is_file():
            raise InputError(f"{where}: fewshot_data file not found: {pool}")
        values["fewshot_data"] = pool


def _check_metric(values: dict, kind: TaskKind, where: str) -> None:
    values.setdefault("metric", kind.default_metric)
    if not isinstance(values["metric"], str) or values["metric"] not in METRICS:
        raise InputError(f"{where}: unknown metric {values['metric']!r}"
                         f"{did_you_mean(str(values['metric']), METRICS.names())} (declared metrics: "
                         f"{', '.join(METRICS.names())}; Python code can declare more with "
                         "harness.metrics.register_metric)")  # fmt: skip
    if kind.metrics and values["metric"] not in kind.metrics:
        raise InputError(f"{where}: metric {values['metric']!r} does not fit kind {kind.name!r} "
                         f"(choose from {', '.join(kind.metrics)})")  # fmt: skip


_STRING_FIELDS = {f.name for f in dataclasses.fields(Task) if f.type in ("str", "str | None")}
_PATH_FIELDS = {"data", "fewshot_data"}
_INTERNAL_FIELDS = {"source", "answer_filter"}  # set through a kind's own keys


def _check_types(entry: dict, kind: TaskKind, where: str) -> None:
    """Every text field a string (paths too), the name a string or number."""
    if not isinstance(entry["name"], str | int) or isinstance(entry["name"], bool):
        raise InputError(f"{where}: 'name' must be a string")
    for key in (_STRING_FIELDS | _PATH_FIELDS | set(kind.keys)) & set(entry) - {"name"}:
        value = entry[key]
        field = _TASK_FIELDS[kind.keys.get(key, key)]
        if value is None and (key in _PATH_FIELDS - {"data"} or "None" in field.type):
            continue
        if not isinstance(value, str):
            raise InputError(f"{where}: {key!r} must be a string, not {type(value).__name__}")


def read_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) for every non-blank line; a bad line is an error naming
    the file and line."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InputError(f"{path}:{lineno}: not UTF-8 text (byte {exc.start})") from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
            except (ValueError, RecursionError) as exc:  # a 5,000-digit number, deep nesting
                raise InputError(
                    f"{path}:{lineno}: not usable JSON ({type(exc).__name__})"
                ) from None
            if not isinstance(record, dict):
                raise InputError(f"{path}:{lineno}: each line must be a JSON object")
            if "\\ud" in line.lower():  # JSON joins escaped surrogate pairs; a lone half stays
                try:
                    json.dumps(record, ensure_ascii=False).encode("utf-8")
                except UnicodeEncodeError:
                    raise InputError(f"{path}:{lineno}: not valid Unicode text (an unpaired "
                                     "surrogate escape)") from None  # fmt: skip
            yield lineno, record


def load_items(task: Task) -> list[dict]:
    """The task's JSONL items, each with a string ``id`` (line number when absent)."""
    items: list[dict] = []
    seen: set[str] = set()
    for lineno, item in read_jsonl(task.data):
        item["id"] = str(item.get("id", lineno))
        if item["id"] in seen:
            raise InputError(f"{task.data}:{lineno}: duplicate item id {item['id']!r}")
        seen.add(item["id"])
        _check_item(task, item, f"{task.data}:{lineno}")
        items.append(item)
    if not items:
        raise InputError(f"{task.data}: no items (task {task.name!r})")
    return items


def _check_item(task: Task, item: dict, where: str) -> None:
    if task.kind == "perplexity":
        if not isinstance(item.get(task.text_field), str) or not item[task.text_field]:
            raise InputError(f"{where}: missing text field {task.text_field!r}")
        return
    templates = [task.prompt] + ([task.target] if task.kind == "generate" else [])
    for template in templates:
        try:
            fields = [field for _, field, _, _ in string.Formatter().parse(template)]
        except ValueError as exc:
            raise InputError(
                f"task {task.name!r}: template {template[:60]!r} is not valid ({exc})"
            ) from None
        for field in fields:
            if field is not None and field not in item:
                raise InputError(
                    f"{where}: task {task.name!r} template names missing field {field!r}"
                )
        try:  # what rendering will do, so it cannot fail after the model is loaded
            template.format(**item)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
            raise InputError(f"{where}: task {task.name!r} cannot render {template[:60]!r} "
                             f"({type(exc).__name__}: {exc})") from None  # fmt: skip
    if task.kind == "multiple_choice":
        choices = item.get(task.choices_field)
        if not isinstance(choices, list) or len(choices) < 2:
            raise InputError(
                f"{where}: {task.choices_field!r} must be a list of at least 2 strings"
            )
        answer = item.get(task.answer_field)
        if (
            not isinstance(answer, int)
            or isinstance(answer, bool)
            or not 0 <= answer < len(choices)
        ):
            raise InputError(
                f"{where}: {task.answer_field!r} must be an index into {task.choices_field!r}"
            )
    if "slices" in item and not (
        isinstance(item["slices"], list) and all(isinstance(s, str) for s in item["slices"])
    ):
        raise InputError(f"{where}: 'slices' must be a list of strings")
