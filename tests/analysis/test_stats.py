"""Paired statistics and the knee, on synthetic tables with known effects."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from harness.analysis.stats import (
    ALL_ITEMS,
    FRAGILE,
    add_fragile,
    compare,
    explode_slices,
    find_knee,
    knees,
)
from tests.synthetic import METRICS, make_items, records


def by_key(comparisons):
    return {(c.variant, c.task, c.slice): c for c in comparisons}


def test_flips_mcnemar_and_deltas_match_hand_counts():
    items = make_items(0, {"v": {"noise": 0.1}})
    comps = by_key(compare(items, METRICS))
    c = comps[("v", "mc_rare", "rare")]
    rare = items[items.task == "mc_rare"].set_index("item_id")
    base = rare[rare.variant == "baseline"]["correct"].astype(bool)  # object column: make it bool
    var = rare[rare.variant == "v"]["correct"].astype(bool)
    lost, gained = int((base & ~var).sum()), int((~base & var).sum())
    assert (c.lost, c.gained) == (lost, gained)
    assert c.flip_rate == pytest.approx(lost / len(base))
    assert c.delta == pytest.approx(var.mean() - base.mean())
    assert c.p_value == pytest.approx(sps.binomtest(lost, lost + gained, 0.5).pvalue)
    assert c.delta_ci[0] <= c.delta <= c.delta_ci[1]


def test_perplexity_ratio_and_interval():
    items = make_items(1, {"v": {"ppl_shift": 0.1}})
    c = by_key(compare(items, METRICS))[("v", "text", ALL_ITEMS)]
    rows = items[items.task == "text"]
    base, var = rows[rows.variant == "baseline"], rows[rows.variant == "v"]
    assert c.base_value == pytest.approx(math.exp(base.nll.sum() / base.n_tokens.sum()))
    assert c.loss == pytest.approx(
        math.exp((var.nll.sum() - base.nll.sum()) / base.n_tokens.sum()) - 1
    )
    assert c.loss == pytest.approx(math.exp(0.1) - 1, abs=0.01)
    assert c.loss_ci[0] < c.loss < c.loss_ci[1] and c.p_value < 1e-6


def test_intervals_are_bonferroni_simultaneous_and_q_values_bh():
    items = make_items(2, {"v": {"noise": 0.05}, "w": {"noise": 0.05}})
    comps = compare(items, METRICS, alpha=0.05)
    per_variant = sum(c.variant == "v" for c in comps)
    assert per_variant == 3 * 3 + 3  # each task: all + its slice + fragile
    assert all(c.level == pytest.approx(1 - 0.05 / per_variant) for c in comps)
    expected = sps.false_discovery_control([c.p_value for c in comps], method="bh")
    assert np.allclose([c.q_value for c in comps], expected)


def test_intervals_are_analytic_and_agree_with_a_large_bootstrap():
    """No resampling: the same table gives the same intervals every time; and each
    interval agrees with a 20,000-resample paired percentile bootstrap (an independent
    computation) within 10% of its width, at 95%."""
    items = make_items(3, {"v": {"noise": 0.08, "ppl_shift": 0.05, "kld": 0.03}})
    assert compare(items, METRICS) == compare(items, METRICS)
    comps = by_key(compare(items, METRICS, alpha=0.05, family=1))
    rng = np.random.default_rng(0)
    idx = rng.integers(0, 120, size=(20000, 120))
    text = items[items.task == "text"]
    b, v = text[text.variant == "baseline"], text[text.variant == "v"]
    tokens = b.n_tokens.to_numpy(float)
    boot = (
        np.exp((v.nll.to_numpy()[idx].sum(1) - b.nll.to_numpy()[idx].sum(1)) / tokens[idx].sum(1))
        - 1
    )
    kld = (v.kld.to_numpy() * tokens)[idx].sum(1) / tokens[idx].sum(1)
    mc = items[items.task == "mc_general"]
    bc = mc[mc.variant == "baseline"].correct.to_numpy(bool)
    vc = mc[mc.variant == "v"].correct.to_numpy(bool)
    drop = (bc[idx].sum(1) - vc[idx].sum(1)) / bc[idx].sum(1)
    for (task, field), samples in {("text", "loss_ci"): boot, ("text", "kld_ci"): kld,
                                   ("mc_general", "loss_ci"): drop}.items():  # fmt: skip
        low, high = getattr(comps[("v", task, ALL_ITEMS)], field)
        ref_low, ref_high = np.quantile(samples, [0.025, 0.975])
        width = ref_high - ref_low
        assert abs(low - ref_low) < 0.1 * width and abs(high - ref_high) < 0.1 * width, (
            task,
            field,
        )


def test_flip_rate_interval_is_clopper_pearson():
    items = make_items(5, {"v": {"noise": 0.1}})
    c = by_key(compare(items, METRICS, alpha=0.05, family=1))[("v", "mc_rare", ALL_ITEMS)]
    exact = sps.binomtest(c.lost, c.n).proportion_ci(confidence_level=c.level, method="exact")
    assert c.flip_rate_ci == pytest.approx((exact.low, exact.high))


def _paired(rng, n, p_base, p_lost, p_gained):
    b = rng.random(n) < p_base
    u = rng.random(n)
    v = b.copy()
    v[b & (u < p_lost / p_base)] = False
    v[~b & (u < p_gained / (1 - p_base))] = True
    base = pd.DataFrame({"correct": b, "n_tokens": 1, "kld": np.nan})
    return base, base.assign(correct=v)


@pytest.mark.parametrize(
    "n,p_lost,p_gained", [(40, 0.06, 0.02), (120, 0.04, 0.0), (400, 0.12, 0.08)]
)
def test_accuracy_drop_at_the_tolerance_fails_at_most_alpha_over_2(n, p_lost, p_gained):
    """A true relative drop exactly at the tolerance: the interval's lower end clears the
    tolerance (a false fail) in at most alpha/2 of 2,000 simulated variants (+ noise)."""
    from harness.analysis.stats import compare_pair
    from harness.metrics import get_metric

    rng = np.random.default_rng(n)
    tolerance = (p_lost - p_gained) / 0.8
    fails = sum(
        compare_pair(*_paired(rng, n, 0.8, p_lost, p_gained), get_metric("acc"), 0.95).loss_ci[0]
        > tolerance
        for _ in range(2000)
    )
    assert fails / 2000 <= 0.025 + 0.01, fails


def test_explode_slices_adds_all():
    frame = pd.DataFrame({"slices": [["a", "b"], []], "x": [1, 2]})
    exploded = explode_slices(frame)
    assert list(exploded["slice"]) == [ALL_ITEMS, "a", "b", ALL_ITEMS]


@pytest.mark.parametrize(
    "losses,knee",
    [
        ([0, 0.01, 0.02, 0.3, 0.9], 4),  # flat to 4 bits, then a cliff
        ([0, 0.005, 0.01, 0.02, 0.8], 3),  # flat to 3 bits
        ([0, 0.0, 0.4, 0.8, 1.0], 8),  # breaks right after 8 bits
        ([0, 0.0015, 0.26, 1.49, 11.8], 4),  # log perplexity ratio of RTN on the default model
        ([0, 0.5, 0.9, 0.95, 1.0], 16),  # the first step already hurts: no flat region
        ([0, 0.001, 0.003, 0.002, 0.004], None),  # never loses anything: no knee
    ],
)
def test_knee_finds_the_planted_knee(losses, knee):
    assert find_knee([16, 8, 4, 3, 2], losses) == knee


def test_knee_is_independent_of_point_order_and_scale():
    assert find_knee([2, 16, 4, 8, 3], [0.9, 0, 0.02, 0.01, 0.3]) == 4
    assert find_knee([16, 8, 4, 3, 2], [0, 1, 2, 30, 90]) == 4


def test_knees_per_method_and_slice_on_synthetic_runs():
    effects = {"w8": {"noise": 0.01}, "w4": {"noise": 0.02}, "w3": {"drop": {"arithmetic": 0.6}},
               "w2": {"drop": {s: 0.9 for s in ("general", "arithmetic", "rare")}}}  # fmt: skip
    sizes = {"w8": (8, 8.25, 500), "w4": (4, 4.25, 300), "w3": (3, 3.25, 250), "w2": (2, 2.25, 200)}
    items = make_items(4, effects)
    table = knees(compare(items, METRICS), records(sizes)).set_index(["task", "slice"])
    assert table.loc[("mc_arithmetic", "arithmetic"), "knee_bits"] == 4
    assert table.loc[("mc_general", "general"), "knee_bits"] == 3


def test_fragile_is_the_baselines_least_confident_fifth_in_every_variant():
    rows = []
    for variant in ("baseline", "v"):
        for i in range(10):
            rows.append({"variant": variant, "task": "mc", "item_id": str(i), "slices": ("x",),
                         "margin": float(i) if variant == "baseline" else -float(i), "gold_logprob": -1.0, "n_tokens": 1})  # fmt: skip
        for i in range(5):
            rows.append({"variant": variant, "task": "gen", "item_id": str(i), "slices": (), "margin": None,
                         "gold_logprob": -float(i), "n_tokens": 2})  # fmt: skip
    labelled = add_fragile(pd.DataFrame(rows))
    fragile = {(r.variant, r.task, r.item_id) for r in labelled.itertuples() if FRAGILE in r.slices}
    expected = {(v, "mc", i) for v in ("baseline", "v") for i in ("0", "1")} | {
        (v, "gen", "4") for v in ("baseline", "v")
    }
    assert fragile == expected


def test_token_tails_pool_every_token_of_the_slice():
    """Percentiles, maximum and RMS over the tokens of all rows, as numpy computes them
    on the pooled values."""
    from harness.analysis.stats import token_tails

    rng = np.random.default_rng(0)
    tokens = [rng.exponential(0.1, size=n) for n in (5, 40, 1)]
    dps = [rng.normal(0, 0.05, size=len(t)) for t in tokens]
    frame = pd.DataFrame(
        {"kld_tokens": [tuple(t) for t in tokens], "dp_tokens": [tuple(d) for d in dps]}
    )
    tails = token_tails(frame)
    pooled, pooled_dp = np.concatenate(tokens), np.concatenate(dps)
    assert tails["kld_p99"] == pytest.approx(np.percentile(pooled, 99))
    assert tails["kld_p50"] == pytest.approx(np.median(pooled))
    assert tails["kld_max"] == pooled.max()
    assert tails["dp_rms"] == pytest.approx(np.sqrt((pooled_dp**2).mean()))
    assert token_tails(frame.assign(kld_tokens=[None, None, None])) == {}
