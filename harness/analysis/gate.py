"""The gate: a policy (rules as data) applied to the paired comparisons, giving each
variant a verdict and recommending the most aggressive variant that passes.

Decisions are noise-aware, in one of two modes. For a rule "loss at most T" with
interval [lo, hi] ("at least T" rules mirror it):

* **harm** (default; "fail when harm is shown"): **fail** when lo > T, **warn** when the
  point estimate exceeds T but the interval does not settle it (the message says about
  how many more items would), **pass** otherwise. A pass means "no evidence of harm" —
  on a small slice nearly guaranteed. For exploring methods and for everyday CI.
* **safety** ("pass only when safety is shown", an equivalence test): **pass** only when
  hi <= T on at least ``min_items`` items; a slice that cannot show it fails as "not
  enough evidence". For release gates, with a suite sized by ``qharness plan``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from harness.analysis.policy import MIN_ITEMS, Policy, Rule, fmt_value
from harness.errors import InputError
from harness.manifest import Manifest, VariantRecord
from harness.metrics import Metric, get_metric
from harness.records import Comparison, Finding, VariantVerdict, Verdict
from harness.registry import did_you_mean


def decide(
    rule: Rule, c: Comparison, min_items: int = MIN_ITEMS, mode: str = "harm"
) -> Finding | None:
    """Apply one rule to one comparison. An interval over a handful of items is
    degenerate (one item gives a zero-width interval), so comparisons with fewer than
    ``min_items`` items can warn but never fail. A quantity that could not be computed
    (not finite: NaN or infinite outputs, say) fails: the gate never passes what it could
    not measure."""
    measured = rule.measure(c)
    if measured is None:
        return None
    observed, (low, high) = measured
    tol = rule.tolerance
    op = "≤" if rule.direction == "max" else "≥"
    where = f"{c.variant} · {c.task}/{c.slice}: {rule.label}"
    no_interval = not all(math.isfinite(x) for x in (low, high))
    if not math.isfinite(observed) or (no_interval and c.n >= min_items and c.n > 1):
        return Finding(rule=rule.describe(), severity="fail", variant=c.variant, task=c.task,
                       slice=c.slice, metric=rule.kind, observed=float(observed), threshold=tol,
                       ci=(float(low), float(high)),
                       message=f"FAIL: {where} could not be computed ({fmt_value(observed, rule.percent)}, "
                               f"interval [{fmt_value(low, rule.percent)}, {fmt_value(high, rule.percent)}]): "
                               f"non-finite outputs or scores; {op} {fmt_value(tol, rule.percent)} required")  # fmt: skip
    beyond = observed > tol if rule.direction == "max" else observed < tol
    settled = ((low > tol) if rule.direction == "max" else (high < tol)) and c.n >= min_items
    text = (f"{where} {fmt_value(observed, rule.percent)} "
            f"[{fmt_value(low, rule.percent)}, {fmt_value(high, rule.percent)}] {op} {fmt_value(tol, rule.percent)} required")  # fmt: skip
    if mode == "safety":
        severity, note = _safety(rule, c, min_items, observed, (low, high), settled, beyond)
    else:
        severity, note = _harm(c, min_items, observed, (low, high), tol, settled, beyond)
    return Finding(rule=rule.describe(), severity=severity, variant=c.variant, task=c.task, slice=c.slice,
                   metric=rule.kind, observed=float(observed), threshold=tol, ci=(float(low), float(high)),
                   message=f"{severity.upper()}: {text}{note}")  # fmt: skip


def _harm(c: Comparison, min_items: int, observed: float, ci: tuple[float, float], tol: float,
          settled: bool, beyond: bool) -> tuple[str, str]:  # fmt: skip
    """Harm mode: fail what the interval shows beyond the tolerance; warn on a point
    estimate beyond it. Returns the severity and what the message adds."""
    severity = "fail" if settled else "warn" if beyond else "pass"
    if severity == "warn" and c.n < min_items:
        return (
            severity,
            f"; only {c.n} item(s): too few to settle (a fail needs at least {min_items})",
        )
    if severity == "warn":
        half, gap = (ci[1] - ci[0]) / 2, abs(observed - tol)
        more = (
            math.ceil(c.n * (half / gap) ** 2) - c.n
            if gap > 0 and math.isfinite(half)
            else math.inf
        )
        return severity, f"; not settled at n={c.n}: about {more} more items would settle it"
    return severity, ""


def _safety(rule: Rule, c: Comparison, min_items: int, observed: float, ci: tuple[float, float],
            harmful: bool, beyond: bool) -> tuple[str, str]:  # fmt: skip
    """Safety mode: pass only when the interval lies within the tolerance. Returns the
    severity and what the message adds."""
    (low, high), tol = ci, rule.tolerance
    if (high <= tol if rule.direction == "max" else low >= tol) and c.n >= min_items:
        return "pass", ""
    if harmful:
        return "fail", "; shown beyond the tolerance"
    if c.n < min_items:
        return (
            "fail",
            f"; not enough evidence: only {c.n} item(s), safety needs at least {min_items}",
        )
    gap, half = abs(tol - observed), abs((high if rule.direction == "max" else low) - observed)
    more = "" if beyond or observed == tol else (
        f"; about {max(math.ceil(c.n * (half / gap) ** 2) - c.n, 1)} more items would show it "
        "if the loss is as observed")  # fmt: skip
    return "fail", f"; not enough evidence that it is within tolerance at n={c.n}{more}"


def chosen_rules(policy: Policy, task: str, slice_: str, metric: Metric) -> list[Rule]:
    """The rules that judge ``task`` x ``slice_``: per rule kind, the most specific one
    that matches and applies to the task's metric."""
    where = _Where(task, slice_)
    chosen: dict[str, Rule] = {}
    for rule in policy.rules:
        if not rule.matches(where) or not rule.applies_to(metric):
            continue
        best = chosen.get(rule.kind)
        if best is None or rule.specificity(where) > best.specificity(where):
            chosen[rule.kind] = rule
    return list(chosen.values())


@dataclass(frozen=True)
class _Where:
    task: str
    slice: str


def apply_policy(policy: Policy, comparisons: list[Comparison]) -> list[Finding]:
    """For each comparison and rule kind, the most specific matching rule decides."""
    findings = []
    for c in comparisons:
        rules = chosen_rules(policy, c.task, c.slice, get_metric(c.metric))
        decided = (decide(rule, c, policy.min_items, policy.mode) for rule in rules)
        findings.extend(f for f in decided if f is not None)
    return findings


NONFINITE_RULE = "finite outputs"
PARTIAL_RULE = "complete_evaluation"  # a variant --adaptive stopped early never passes


def nonfinite_findings(items) -> list[Finding]:
    """A failure for each variant x task whose forward pass gave NaN or Inf logits (a
    2-bit variant scored in float16, say): those items already count as wrong and worst;
    this names the cause. ``items`` is the run's item frame."""
    if "nonfinite" not in items:
        return []
    broken = items[(items["variant"] != "baseline") & (items["nonfinite"] > 0)]
    findings = []
    for (variant, task), rows in broken.groupby(["variant", "task"], sort=True):
        of = int(((items["variant"] == variant) & (items["task"] == task)).sum())
        message = (f"FAIL: {variant} · {task}: non-finite outputs (NaN/Inf logits) at "
                   f"{int(rows['nonfinite'].sum())} scored tokens of {len(rows)} of {of} items; "
                   "they count as wrong, with infinite loss")  # fmt: skip
        findings.append(Finding(NONFINITE_RULE, "fail", variant, task, "all", "nonfinite",
                                float(len(rows)), 0.0, (float(len(rows)), float(len(rows))), message))  # fmt: skip
    return findings


def verdict(
    findings: list[Finding],
    variants: dict[str, VariantRecord],
    require: str | None = None,
    mode: str = "harm",
) -> Verdict:
    """Each variant's verdict; the recommended variant is the passing one with the fewest
    effective bits per weight, then the smallest size, then the narrowest KV cache."""
    names = [v for v in variants if v != "baseline"]
    if require is not None and require not in names:
        raise InputError(
            f"--require: no variant {require!r} in this run{did_you_mean(require, names)}"
        )
    verdicts = []
    for name in names:
        mine = [f for f in findings if f.variant == name]
        failures = sum(f.severity == "fail" for f in mine)
        info = variants[name]
        verdicts.append(VariantVerdict(name, failures == 0, failures, sum(f.severity == "warn" for f in mine),
                                       info.effective_bits, info.model_bytes))  # fmt: skip
    passing = [v for v in verdicts if v.passed]

    best = min(passing, key=lambda v: (v.effective_bits, v.model_bytes or 0, variants[v.variant].kv_bits),
               default=None)  # fmt: skip
    recommended = best.variant if best else None
    passed = (
        any(v.variant == require and v.passed for v in verdicts)
        if require
        else recommended is not None
    )
    return Verdict(passed=passed, target=require, recommended_variant=recommended,
                   variants=tuple(verdicts), findings=tuple(findings), mode=mode)  # fmt: skip


def partial_failures(manifest: Manifest, findings: list[Finding]) -> list[Finding]:
    """Failures for the variants ``--adaptive`` stopped early whose partial rows no longer
    fail the gate (re-gated under a looser policy, say): evaluated in part, they must not
    pass. Variants that still fail need nothing added."""
    failed = {f.variant for f in findings if f.severity == "fail"}
    added = []
    for variant, stop in manifest.adaptive_failures.items():
        if variant in failed:
            continue
        message = (f"FAIL: {variant} was evaluated in part (--adaptive stopped it on: "
                   f"{stop.message}); rerun without --adaptive to gate it under this policy")  # fmt: skip
        added.append(
            dataclasses.replace(
                stop, rule=PARTIAL_RULE, severity="fail", variant=variant, message=message
            )
        )
    return added
