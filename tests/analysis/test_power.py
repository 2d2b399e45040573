"""What a slice can see, checked by simulation against the gate's own decisions: planted
drops of the reported MDE fail 80% of the time; safety mode passes a variant losing half
its tolerance as often as designed and a variant just beyond it at most alpha of the time."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from harness.analysis.gate import decide
from harness.analysis.policy import MaxDrop, MaxFlipRate, Policy, default_rules
from harness.analysis.power import (
    RESOLVE,
    SAFETY_DESIGN,
    drop_items_needed,
    drop_mde,
    flip_items_needed,
    flip_mde,
    safety_items_needed,
    slice_power,
)
from harness.analysis.stats import compare_pair
from harness.metrics import get_metric

ACC = get_metric("acc")
TRIALS = 1000
ALPHA = 0.05
LEVEL = 1 - ALPHA  # one comparison: its interval at the family level


def planted(rng, n: int, accuracy: float, drop: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Baseline rows right with probability ``accuracy``; the variant loses each right
    item with probability ``drop`` (a relative accuracy drop of ``drop``, no gains)."""
    base = rng.random(n) < accuracy
    variant = base & ~(rng.random(n) < drop)
    frame = lambda right: pd.DataFrame({"correct": right, "kld": np.nan, "top1_agree": np.nan,  # noqa: E731
                                        "n_tokens": 1})  # fmt: skip
    return frame(base), frame(variant)


def gate_rate(rule, n: int, accuracy: float, drop: float, mode: str, seed: int) -> dict[str, float]:
    """Share of trials the gate gives each severity to ``rule`` on planted rows."""
    rng = np.random.default_rng(seed)
    counts = {"pass": 0, "warn": 0, "fail": 0}
    for _ in range(TRIALS):
        base, variant = planted(rng, n, accuracy, drop)
        finding = decide(rule, compare_pair(base, variant, ACC, LEVEL), 10, mode)
        counts[finding.severity] += 1
    return {k: v / TRIALS for k, v in counts.items()}


@pytest.mark.parametrize("n,accuracy,tolerance", [(400, 0.7, 0.05), (250, 0.9, 0.02)])
def test_a_drop_of_the_reported_mde_fails_80_percent_of_the_time(n, accuracy, tolerance):
    mde = drop_mde(n, accuracy, tolerance, LEVEL)
    assert tolerance < mde < 1
    rate = gate_rate(MaxDrop(tolerance), n, accuracy, mde, "harm", seed=n)["fail"]
    assert 0.75 <= rate <= 0.85, (mde, rate)


@pytest.mark.parametrize("n,tolerance", [(400, 0.10), (300, 0.05)])
def test_a_flip_rate_of_the_reported_mde_fails_80_percent_of_the_time(n, tolerance):
    mde = flip_mde(n, tolerance, LEVEL)
    rate = gate_rate(MaxFlipRate(tolerance), n, 1.0, mde, "harm", seed=n)["fail"]
    assert 0.75 <= rate <= 0.85, (mde, rate)


def test_safety_mode_passes_as_designed_and_rarely_passes_a_loss_beyond_tolerance():
    accuracy, tolerance = 0.8, 0.05
    n = safety_items_needed(accuracy, tolerance, LEVEL)
    inside = gate_rate(MaxDrop(tolerance), n, accuracy, SAFETY_DESIGN * tolerance, "safety", seed=1)
    assert inside["pass"] >= 0.75, (n, inside)  # designed for 80% (1 - beta), +- simulation noise
    outside = gate_rate(MaxDrop(tolerance), n, accuracy, tolerance * 1.02, "safety", seed=2)
    assert outside["pass"] <= ALPHA, (n, outside)  # a false pass: at most alpha
    # the same rows in harm mode pass nearly always: "no evidence of harm" is no evidence of safety
    assert (
        gate_rate(MaxDrop(tolerance), n, accuracy, tolerance * 1.02, "harm", seed=2)["fail"] < 0.1
    )


def test_items_needed_resolve_the_tolerance_and_more_items_see_smaller_drops():
    need = drop_items_needed(0.75, 0.05, LEVEL)
    assert drop_mde(need, 0.75, 0.05, LEVEL) == pytest.approx(RESOLVE * 0.05, rel=0.02)
    assert flip_mde(flip_items_needed(0.05, LEVEL), 0.05, LEVEL) <= RESOLVE * 0.05 * 1.05
    mdes = [drop_mde(n, 0.75, 0.05, LEVEL) for n in (24, 100, 400, 1600)]
    assert mdes == sorted(mdes, reverse=True) and mdes[0] > 0.3 and mdes[-1] < 0.1
    assert math.isinf(drop_mde(1, 0.75, 0.05, LEVEL))


def test_slice_power_covers_every_slice_and_rule_from_the_baseline_alone():
    rng = np.random.default_rng(0)
    rows = []
    for i in range(60):
        slices = ["arithmetic"] if i < 24 else ["general"]
        rows.append({"variant": "baseline", "task": "qa", "item_id": str(i), "slices": slices,
                     "correct": bool(rng.random() < 0.8), "gold_logprob": -1.0, "n_tokens": 4, "margin": 1.0})  # fmt: skip
    powers = slice_power(pd.DataFrame(rows), {"qa": "acc"}, Policy(default_rules(), ALPHA))
    by = {(p.slice, p.rule.split()[0]): p for p in powers}
    arithmetic = by[("arithmetic", "max_drop")]
    assert arithmetic.n == 24 and arithmetic.tolerance == 0.02 and not arithmetic.resolves
    assert arithmetic.items_needed > 1000 and arithmetic.mde > 0.3
    assert by[("all", "max_drop")].n == 60 and by[("all", "max_drop")].tolerance == 0.05
    assert math.isnan(by[("all", "max_kld")].mde)  # needs a variant's spread
    assert {"arithmetic", "general", "all", "fragile"} <= {p.slice for p in powers}
