"""What broke, first: the gate's findings ranked by severity and effect size, each with
two example items, and one line per slice for the rest — for report.md, the top of
report.html and the terminal."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from harness.analysis.policy import RULES
from harness.analysis.stats import add_fragile, explode_slices
from harness.manifest import Manifest
from harness.metrics import get_metric
from harness.records import Finding, Verdict
from harness.registry import UnknownName

TOP = 10
TERMINAL_TOP = 5
TERMINAL_VARIANTS = 5
REST_LINES = 3


@dataclass(frozen=True)
class Ranked:
    finding: Finding
    examples: tuple[str, ...]  # "item: expected → got", at most two
    resolves: bool | None  # whether its slice can resolve the rule's tolerance (None: unknown)


def excess(finding: Finding) -> float:
    """How far past its tolerance a finding is, relative to the tolerance (inf: not
    finite, which ranks first)."""
    if not math.isfinite(finding.observed):
        return math.inf
    gap = finding.observed - finding.threshold
    gap = -gap if finding.metric in RULES and RULES.get(finding.metric).direction == "min" else gap
    return gap / abs(finding.threshold) if finding.threshold else gap


def _percent(finding: Finding) -> bool:
    return finding.metric in RULES and RULES.get(finding.metric).percent


def _num(value: float, percent: bool) -> str:
    if not math.isfinite(value):
        return "not finite"
    return f"{value:.1%}" if percent else f"{value:.3g}"


def measure(finding: Finding) -> str:
    """What a finding measures ("accuracy drop", "mean KLD", ...)."""
    return RULES.get(finding.metric).label if finding.metric in RULES else finding.rule


def observed(finding: Finding) -> str:
    pct = _percent(finding)
    low, high = finding.ci
    interval = f" [{_num(low, pct)}, {_num(high, pct)}]" if finding.metric in RULES else ""
    return _num(finding.observed, pct) + interval


def required(finding: Finding) -> str:
    if finding.metric not in RULES:
        return finding.message.split(": ", 1)[-1][:80]
    op = "≤" if RULES.get(finding.metric).direction == "max" else "≥"
    return f"{op} {_num(finding.threshold, _percent(finding))}"


def rank(findings, resolves: dict | None = None) -> list[Finding]:
    """Failures before warnings; then warnings on slices that can resolve their tolerance
    before those on slices too small to (whose point estimates are mostly noise); larger
    excess first, then the narrower interval; one finding per variant x task x slice."""

    def blind(f: Finding) -> bool:
        return f.severity == "warn" and (resolves or {}).get((f.task, f.slice, f.rule)) is False

    width = lambda f: f.ci[1] - f.ci[0] if all(map(math.isfinite, f.ci)) else math.inf  # noqa: E731
    flagged = sorted((f for f in findings if f.severity != "pass"),
                     key=lambda f: (f.severity != "fail", blind(f), -excess(f), width(f), f.variant, f.task, f.slice))  # fmt: skip
    seen, out = set(), []
    for f in flagged:
        key = (f.variant, f.task, f.slice)
        if key not in seen:
            seen.add(key)
            out.append(f)
    return out


def _spread(ranked: list[Finding], widths: dict[str, float], limit: int) -> list[Finding]:
    """At most ``limit`` findings, one per variant x task, taken in turn from each variant
    (widest first: the one closest to shipping), kept in rank order."""
    queues: dict[str, list[Finding]] = {}
    tasks = set()
    for f in ranked:
        if (f.variant, f.task) not in tasks:
            tasks.add((f.variant, f.task))
            queues.setdefault(f.variant, []).append(f)
    order = sorted(queues, key=lambda v: -widths.get(v, 0.0))
    chosen: list[Finding] = []
    while len(chosen) < limit and any(queues.values()):
        for variant in order:
            if queues[variant] and len(chosen) < limit:
                chosen.append(queues[variant].pop(0))
    position = {id(f): i for i, f in enumerate(ranked)}
    return sorted(chosen, key=lambda f: position[id(f)])


def top_findings(verdict: Verdict | None, items: pd.DataFrame, metrics: dict[str, str],
                 resolves: dict[tuple[str, str, str], bool], limit: int = TOP) -> list[Ranked]:  # fmt: skip
    if verdict is None:
        return []
    rows = explode_slices(add_fragile(items)) if not items.empty else items
    out = []
    widths = {v.variant: v.effective_bits for v in verdict.variants}
    for f in _spread(rank(verdict.findings, resolves), widths, limit):
        out.append(
            Ranked(
                f,
                _examples(rows, f, metrics.get(f.task, "")),
                resolves.get((f.task, f.slice, f.rule)),
            )
        )
    return out


def _examples(
    rows: pd.DataFrame, finding: Finding, metric_name: str, n: int = 2
) -> tuple[str, ...]:
    """Items of the finding's task x slice that show it: right for the baseline and wrong
    for the variant, else those with the largest divergence from the baseline."""
    if rows.empty or finding.task == "" or "slice" not in rows:
        return ()
    here = rows[(rows["task"] == finding.task) & (rows["slice"] == finding.slice)]
    base = here[here["variant"] == "baseline"].set_index("item_id")
    mine = here[here["variant"] == finding.variant].set_index("item_id")
    shared = mine.index.intersection(base.index)
    base, mine = base.loc[shared], mine.loc[shared]
    try:
        outcome = get_metric(metric_name).outcome
    except UnknownName:  # a metric this run does not know: no outcome to compare
        outcome = False
    if outcome and mine["correct"].notna().any():
        flipped = base["correct"].eq(True) & mine["correct"].eq(False)
        picked = list(flipped[flipped].index)
    else:
        picked = list(mine["kld"].astype(float).sort_values(ascending=False).index)
    return tuple(_describe(i, base.loc[i], mine.loc[i]) for i in picked[:n])


def _describe(item_id: str, base: pd.Series, mine: pd.Series, width: int = 24) -> str:
    cut = lambda s: (str(s)[:width] + "…") if len(str(s)) > width else str(s)  # noqa: E731
    if mine.get("prediction") or base.get("prediction"):
        return (
            f"{cut(item_id)}: {cut(base.get('prediction', ''))} → {cut(mine.get('prediction', ''))}"
        )
    return f"{cut(item_id)}: KLD {float(mine.get('kld') or math.nan):.3g}"


def rest_lines(verdict: Verdict | None, shown: list[Ranked], resolves: dict) -> list[str]:
    """One line per slice for the findings not shown: how many fails and warnings, and
    how many of those sit on slices too small to resolve their tolerance."""
    if verdict is None:
        return []
    done = {(r.finding.variant, r.finding.task, r.finding.slice) for r in shown}
    rest = [f for f in rank(verdict.findings, resolves) if (f.variant, f.task, f.slice) not in done]
    lines = []
    for slice_ in dict.fromkeys(f.slice for f in rest):
        mine = [f for f in rest if f.slice == slice_]
        fails, warns = (
            sum(f.severity == "fail" for f in mine),
            sum(f.severity == "warn" for f in mine),
        )
        blind = sum(
            f.severity == "warn" and resolves.get((f.task, f.slice, f.rule)) is False for f in mine
        )
        parts = [
            f"{n} more {word}{'s' if n != 1 else ''}"
            for n, word in ((fails, "fail"), (warns, "warning"))
            if n
        ]
        note = ""
        if blind and blind == warns:
            note = " — every warning on slices too small to resolve their tolerance (see qharness plan)"
        elif blind:
            note = f" — {blind} warnings on slices too small to resolve their tolerance (see qharness plan)"
        lines.append(f"{slice_}: {', '.join(parts)}{note}")
    if len(lines) > REST_LINES:  # the later groups, in one line
        groups = list(dict.fromkeys(f.slice for f in rest))
        later = [f for f in rest if f.slice in groups[REST_LINES - 1 :]]
        lines = [*lines[: REST_LINES - 1], f"{len(groups) - REST_LINES + 1} other slices: "
                 f"{sum(f.severity == 'fail' for f in later)} fails, {sum(f.severity == 'warn' for f in later)} "
                 "warnings (see report.html)"]  # fmt: skip
    return lines


def terminal_summary(verdict: Verdict, top: list[Ranked], rest: list[str]) -> str:
    """The verdict in at most 15 lines: the widest variants, the gate line, the worst
    findings, and how much more there is."""
    variants = sorted(verdict.variants, key=lambda v: -v.effective_bits)
    lines = [f"{'variant':<24} {'bits/w':>7} {'verdict':>8} {'fail':>5} {'warn':>5}"]
    for v in variants[:TERMINAL_VARIANTS]:
        star = "  ← recommended" if v.variant == verdict.recommended_variant else ""
        lines.append(f"{v.variant[:24]:<24} {v.effective_bits:>7.3g} {'PASS' if v.passed else 'FAIL':>8} "
                     f"{v.failures:>5} {v.warnings:>5}{star}")  # fmt: skip
    if len(variants) > TERMINAL_VARIANTS:
        lines.append(f"… {len(variants) - TERMINAL_VARIANTS} more variants in report.md")
    target = f"variant {verdict.target}" if verdict.target else "any variant"
    lines.append(f"gate ({verdict.mode} mode): {'PASSED' if verdict.passed else 'FAILED'} (needs {target} to pass); "
                 f"recommended: {verdict.recommended_variant or 'none'}")  # fmt: skip
    for r in top[:TERMINAL_TOP]:
        lines.append("  " + r.finding.message[:150])
    more = len(top) - TERMINAL_TOP + len(rest)
    if more > 0:
        lines.append(f"  … and more on {len(rest)} slice(s): see report.md")
    return "\n".join(lines[:15])


def resolves_map(power: pd.DataFrame) -> dict[tuple[str, str, str], bool]:
    """(task, slice, rule) -> whether the slice resolves the rule's tolerance."""
    if power is None or power.empty:
        return {}
    return {(t, s, r): bool(ok) for t, s, r, ok in zip(power["task"], power["slice"], power["rule"],
                                                       power["resolves"], strict=True)}  # fmt: skip


def what_broke(verdict: Verdict | None, items: pd.DataFrame, manifest: Manifest,
               power: pd.DataFrame | None) -> tuple[list[Ranked], list[str]]:  # fmt: skip
    """The ranked top findings and the lines for the rest, for every report."""
    metrics = manifest.metrics
    resolves = resolves_map(power)
    top = top_findings(verdict, items, metrics, resolves)
    return top, rest_lines(verdict, top, resolves)


def terminal_summary_of(store, verdict: Verdict) -> str:
    """:func:`terminal_summary` for a run just analysed (reads its rows and power.csv)."""
    power_path = store.root / "power.csv"
    power = pd.read_csv(power_path) if power_path.exists() else None
    top, rest = what_broke(verdict, store.load_items(), store.manifest(), power)
    return terminal_summary(verdict, top, rest)
