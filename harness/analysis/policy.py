"""Gate policies as data: the rules (registered by kind), their defaults, and the
``gate:`` block of a suite or a policy file parsed into a :class:`Policy`."""

from __future__ import annotations

import dataclasses
import fnmatch
import math
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from harness.errors import InputError
from harness.metrics import Metric, get_metric
from harness.records import Comparison
from harness.registry import Registry, did_you_mean
from harness.yamlfile import read_yaml

RULES: Registry[type[Rule]] = Registry("gate rule")
STRICT_SLICES = ("arithmetic", "rare", "long_context")
MIN_ITEMS = 10
GATE_KEYS = ("rules", "alpha", "defaults", "min_items", "mode")
GATE_MODES = ("harm", "safety")


def register_rule(cls: type[Rule]) -> type[Rule]:
    RULES.register(cls.kind, cls)
    return cls


@dataclass(frozen=True)
class Rule:
    """A tolerance on one measured quantity, for the task x slice pairs it selects."""

    kind: ClassVar[str] = ""
    direction: ClassVar[str] = "max"  # "max": observed <= tolerance; "min": observed >= tolerance
    label: ClassVar[str] = ""
    percent: ClassVar[bool] = True
    tolerance: float = 0.0
    slices: tuple[str, ...] = ("*",)
    tasks: tuple[str, ...] = ("*",)

    field: ClassVar[str] = ""  # the Comparison attribute measured; its interval is ``<field>_ci``

    @staticmethod
    def applies_to(metric: Metric) -> bool:
        """Whether the rule judges tasks with this metric."""
        return True

    def measure(self, c: Comparison) -> tuple[float, tuple[float, float]] | None:
        """(observed, interval) for a comparison, or None if the rule does not apply."""
        value = getattr(c, self.field)
        if value is None or not self.applies_to(get_metric(c.metric)):
            return None
        return value, getattr(c, f"{self.field}_ci")

    def matches(self, c: Comparison) -> bool:
        return any(fnmatch.fnmatchcase(c.slice, p) for p in self.slices) and any(
            fnmatch.fnmatchcase(c.task, p) for p in self.tasks
        )

    def specificity(self, c: Comparison) -> int:
        """Exact names beat patterns, patterns beat ``*``: the most specific rule of a
        kind is the one that applies."""

        def score(value: str, patterns: tuple[str, ...]) -> int:
            hits = [p for p in patterns if fnmatch.fnmatchcase(value, p)]
            return max((2 if p == value else 0 if p == "*" else 1) for p in hits) if hits else -1

        return 3 * score(c.slice, self.slices) + score(c.task, self.tasks)

    def describe(self) -> str:
        op = "≤" if self.direction == "max" else "≥"
        where = ",".join(self.slices) + (
            "" if self.tasks == ("*",) else f" in {','.join(self.tasks)}"
        )
        return f"{self.kind} {op} {fmt_value(self.tolerance, self.percent)} [{where}]"

    def to_dict(self) -> dict:
        return {"kind": self.kind, **{k: list(v) if isinstance(v, tuple) else v
                                      for k, v in dataclasses.asdict(self).items()}}  # fmt: skip


@register_rule
@dataclass(frozen=True)
class MaxDrop(Rule):
    """Relative drop of an accuracy (or any mean score) against the baseline,
    ``(base - variant) / base``."""

    kind: ClassVar[str] = "max_drop"
    label: ClassVar[str] = "accuracy drop"
    field: ClassVar[str] = "loss"

    @staticmethod
    def applies_to(metric: Metric) -> bool:
        return not metric.perplexity


@register_rule
@dataclass(frozen=True)
class MaxPerplexityIncrease(Rule):
    """Relative perplexity increase, ``variant / base - 1``."""

    kind: ClassVar[str] = "max_ppl_increase"
    label: ClassVar[str] = "perplexity increase"
    field: ClassVar[str] = "loss"

    @staticmethod
    def applies_to(metric: Metric) -> bool:
        return metric.perplexity


@register_rule
@dataclass(frozen=True)
class MaxFlipRate(Rule):
    """Share of items the baseline got right and the variant got wrong."""

    kind: ClassVar[str] = "max_flip_rate"
    label: ClassVar[str] = "flip rate (right→wrong)"
    field: ClassVar[str] = "flip_rate"

    @staticmethod
    def applies_to(metric: Metric) -> bool:
        return metric.outcome


@register_rule
@dataclass(frozen=True)
class MaxKLD(Rule):
    """Mean KL divergence of next-token distributions from the baseline's (nats)."""

    kind: ClassVar[str] = "max_kld"
    label: ClassVar[str] = "mean KLD"
    percent: ClassVar[bool] = False
    field: ClassVar[str] = "kld"


@register_rule
@dataclass(frozen=True)
class MinTop1(Rule):
    """Share of scored tokens where the variant's top-1 token is the baseline's."""

    kind: ClassVar[str] = "min_top1"
    direction: ClassVar[str] = "min"
    label: ClassVar[str] = "top-1 agreement"
    field: ClassVar[str] = "top1"


@dataclass(frozen=True)
class Policy:
    rules: tuple[Rule, ...]
    alpha: float = 0.05  # family-wise error rate of each variant's intervals
    source: str = "built-in defaults"
    min_items: int = MIN_ITEMS  # fewer items than this can warn but never fail
    mode: str = "harm"  # or "safety": pass only what the intervals show within tolerance


def default_rules() -> tuple[Rule, ...]:
    """What a careful team would start from; stricter where averages hide damage."""
    strict = STRICT_SLICES
    return (
        MaxDrop(0.05), MaxDrop(0.02, slices=strict),
        MaxFlipRate(0.10), MaxFlipRate(0.05, slices=strict),
        MaxPerplexityIncrease(0.05), MaxPerplexityIncrease(0.03, slices=strict),
        MaxKLD(0.10), MaxKLD(0.05, slices=strict),
        MinTop1(0.90),
    )  # fmt: skip


def parse_policy(raw: object, source: str) -> Policy:
    """Build a policy from a ``gate:`` mapping: ``rules`` (list), ``alpha``, ``defaults``."""
    if raw is None:
        return Policy(default_rules())
    if not isinstance(raw, dict):
        raise InputError(f"{source}: the gate policy must be a mapping with 'rules'")
    for key in raw:
        if key not in GATE_KEYS:
            hint = did_you_mean(str(key), list(GATE_KEYS))
            raise InputError(f"{source}: unknown gate key {key!r}{hint}")
    alpha = raw.get("alpha", 0.05)
    if not isinstance(alpha, int | float) or not 0 < alpha < 1:
        raise InputError(f"{source}: gate 'alpha' must be between 0 and 1, not {alpha!r}")
    rules = []
    for i, entry in enumerate(raw.get("rules") or []):
        where = f"{source}: gate rule {i + 1}"
        if not isinstance(entry, dict) or "kind" not in entry:
            raise InputError(f"{where}: each rule is a mapping with 'kind' and 'tolerance'")
        if entry["kind"] not in RULES:
            raise InputError(f"{where}: unknown rule kind {entry['kind']!r}{did_you_mean(str(entry['kind']), RULES.names())} "
                             f"(known: {', '.join(RULES.names())})")  # fmt: skip
        cls = RULES.get(entry["kind"])
        options = {k: v for k, v in entry.items() if k != "kind"}
        allowed = {f.name for f in dataclasses.fields(cls)}
        for key in options:
            if key not in allowed:
                raise InputError(
                    f"{where}: unknown key {key!r}{did_you_mean(str(key), sorted(allowed))}"
                )
        if not isinstance(options.get("tolerance"), int | float):
            raise InputError(f"{where}: 'tolerance' must be a number")
        for key in ("slices", "tasks"):
            if key in options:
                value = [options[key]] if isinstance(options[key], str) else options[key]
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise InputError(f"{where}: {key!r} must be a list of names or patterns")
                options[key] = tuple(value)
        rules.append(cls(**options))
    if raw.get("defaults", True):
        rules.extend(default_rules())
    min_items = raw.get("min_items", MIN_ITEMS)
    if not isinstance(min_items, int) or isinstance(min_items, bool) or min_items < 1:
        raise InputError(
            f"{source}: gate 'min_items' must be a positive integer, not {min_items!r}"
        )
    mode = raw.get("mode", "harm")
    if mode not in GATE_MODES:
        raise InputError(
            f"{source}: gate 'mode' must be one of {', '.join(GATE_MODES)}, not {str(mode)[:40]!r}"
        )
    return Policy(tuple(rules), float(alpha), source, min_items, mode)


def load_policy(path: Path) -> Policy:
    raw = read_yaml(path, "policy")
    return parse_policy(raw.get("gate", raw) if isinstance(raw, dict) else raw, str(path))


def fmt_value(value: float, percent: bool) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:.1%}" if percent else f"{value:.3g}"
