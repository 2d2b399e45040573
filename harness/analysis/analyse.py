"""Stored results -> comparisons, knees, the gate's verdict and each slice's power, as data.

Needs no model: ``qharness run`` calls it after the sweep, and ``qharness gate`` /
``qharness report`` call it on a stored run (with a changed policy, say).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from harness.analysis.gate import apply_policy, nonfinite_findings, partial_failures, verdict
from harness.analysis.policy import Policy, load_policy, parse_policy
from harness.analysis.power import power_frame, slice_power
from harness.analysis.stats import compare, knees
from harness.errors import InputError
from harness.records import Verdict
from harness.store import RunStore

TARGET_ANY = "a recommended variant exists"
STATS_NOTE = (
    "Paired intervals, Bonferroni-simultaneous per variant over its task x slice "
    "comparisons (family-wise level 1 - alpha), deterministic (no resampling): "
    "Clopper-Pearson for flip rates; linearised ratio-estimator t-intervals for accuracy "
    "changes (with one lost and one gained pseudo-item), perplexity ratios, KLD and top-1 "
    "agreement; p-values from McNemar's exact test (accuracy) or the Wilcoxon signed-rank "
    "test, Benjamini-Hochberg adjusted across all comparisons (q_value)."
)


def resolve_policy(store: RunStore, policy_path: Path | None, mode: str | None = None,
                   record: bool = True) -> Policy:  # fmt: skip
    """``--policy FILE``, else the policy recorded in the run, else the suite's ``gate:``
    block, else the built-in defaults; ``mode`` (``--gate-mode``) overrides its mode. With
    ``record`` the policy used is recorded in the run (a gate decision); without, the run
    is only read (``qharness plan``)."""
    policy = _resolve_policy(store, policy_path)
    if mode is not None:
        policy = dataclasses.replace(policy, mode=mode)
    if record and store.manifest().policy != policy_record(policy):
        store.update_manifest(policy=policy_record(policy))
    return policy


def _resolve_policy(store: RunStore, policy_path: Path | None) -> Policy:
    if policy_path is not None:
        return load_policy(policy_path)
    manifest = store.manifest()
    if manifest.policy:
        recorded = manifest.policy
        return dataclasses.replace(parse_policy(recorded["gate"], "the run's recorded policy"),
                                   source=recorded["source"])  # fmt: skip
    if manifest.suite and manifest.suite.gate:
        return parse_policy(manifest.suite.gate, f"suite {manifest.suite.path}")
    return parse_policy(None, "")


def policy_record(policy: Policy) -> dict:
    """The policy as stored in the manifest: a complete ``gate:`` block (every rule
    spelled out, built-in defaults included) and where it came from."""
    gate = {"alpha": policy.alpha, "min_items": policy.min_items, "mode": policy.mode, "defaults": False,
            "rules": [r.to_dict() for r in policy.rules]}  # fmt: skip
    return {"source": policy.source, "gate": gate}


@dataclass(frozen=True)
class Analysis:
    """A stored run analysed: the policy applied, the verdict, the paired comparisons,
    the knee table, and what each slice can resolve."""

    policy: Policy
    verdict: Verdict
    comparisons: list
    knees: pd.DataFrame
    power: pd.DataFrame
    items: pd.DataFrame


def analyse(store: RunStore, *, policy_path: Path | None = None, require: str | None = None,
            mode: str | None = None) -> Analysis:  # fmt: skip
    """Compare every variant to the baseline and apply the gate (the policy used is
    recorded in the run). Writes no files: :func:`harness.report.write_analysis` does."""
    manifest = store.manifest()
    items = store.load_items()
    if items.empty or "baseline" not in set(items["variant"]):
        raise InputError(f"{store.root} has no baseline results yet; run or resume it first")
    policy = resolve_policy(store, policy_path, mode)
    metrics = manifest.metrics
    variants = manifest.variants_in(items["variant"])
    comparisons = compare(items, metrics, alpha=policy.alpha, min_items=1)
    findings = apply_policy(policy, comparisons)
    findings += partial_failures(manifest, findings) + nonfinite_findings(items)
    result = verdict(findings, variants, require, policy.mode)
    baseline = items[items["variant"] == "baseline"]
    power = power_frame(slice_power(baseline, metrics, policy, comparisons))
    return Analysis(policy, result, comparisons, knees(comparisons, variants), power, items)


def gate_record(analysis: Analysis) -> dict:
    """``gate.json``: the verdict, the policy applied, every variant, the knees and the
    findings that did not pass."""
    policy, result = analysis.policy, analysis.verdict
    return {
        "passed": result.passed,
        "target": result.target or TARGET_ANY,
        "recommended_variant": result.recommended_variant,
        "policy": {
            "source": policy.source,
            "alpha": policy.alpha,
            "mode": policy.mode,
            "rules": [r.to_dict() for r in policy.rules],
        },
        "statistics": STATS_NOTE,
        "variants": [dataclasses.asdict(v) for v in result.variants],
        "knees": analysis.knees.to_dict(orient="records"),
        "findings": [dataclasses.asdict(f) for f in result.findings if f.severity != "pass"],
        "n_findings": {
            s: sum(f.severity == s for f in result.findings) for s in ("pass", "warn", "fail")
        },
    }
