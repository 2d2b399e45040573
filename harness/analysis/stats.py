"""Paired statistics of each variant against the baseline, per task x slice, and the
knee of the quality-versus-bits curve.

* Every item is paired with the baseline's row for the same item, so a comparison
  uses the difference per item, not two independent averages.
* Intervals are analytic and paired (no resampling, so no Monte-Carlo noise at the far
  tails the gate uses): Clopper-Pearson for flip rates, linearised ratio-estimator
  t-intervals for accuracy changes (with one lost and one gained pseudo-item), perplexity
  ratios, KLD and top-1 agreement. Gate decisions look at many task x slice comparisons
  at once, so each variant's intervals are Bonferroni-simultaneous: with m comparisons
  for a variant, each interval has level ``1 - alpha / m`` and all hold together with
  ``1 - alpha``.
* p-values (McNemar's exact test on the discordant pairs for accuracy, the Wilcoxon
  signed-rank test on per-token NLL differences for perplexity) are adjusted with
  Benjamini-Hochberg across every comparison of the run (``q_value``).
"""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
from scipy import stats as sps

from harness.manifest import VariantRecord
from harness.metrics import Metric, get_metric
from harness.records import Comparison

ALL_ITEMS = "all"


FRAGILE = "fragile"
FRAGILE_SHARE = 0.2


def baseline_confidence(rows: pd.DataFrame) -> pd.Series:
    """How sure the baseline was of each item: the margin of the gold choice over the best
    wrong one (multiple choice), else the gold answer's mean log-probability per token."""
    per_token = rows["gold_logprob"].astype(float) / rows["n_tokens"].clip(lower=1)
    return rows["margin"].astype(float).fillna(per_token)


def add_fragile(items: pd.DataFrame, share: float = FRAGILE_SHARE) -> pd.DataFrame:
    """Label the baseline's least confident ``share`` of each task's items ``fragile``
    (in every variant's rows, so the slice pairs up)."""
    base = items[items["variant"] == "baseline"]
    fragile = set()
    for task, rows in base.groupby("task", sort=False):
        if len(rows) < 1 / share:
            continue
        confidence = baseline_confidence(rows)
        cut = max(1, int(round(share * len(rows))))
        fragile |= {(task, i) for i in rows.loc[confidence.nsmallest(cut).index, "item_id"]}
    if not fragile:
        return items
    keys = list(zip(items["task"], items["item_id"], strict=True))
    slices = [
        (*s, FRAGILE) if k in fragile and FRAGILE not in s else tuple(s)
        for k, s in zip(keys, items["slices"], strict=True)
    ]
    return items.assign(slices=slices)


def explode_slices(items: pd.DataFrame) -> pd.DataFrame:
    """One row per item and slice label, plus the ``all`` slice for every item."""
    labels = items["slices"].map(lambda s: [ALL_ITEMS, *[x for x in s if x != ALL_ITEMS]])
    return items.assign(slice=labels).explode("slice", ignore_index=True)


def _t(level: float, n: int) -> float:
    """The two-sided Student-t quantile for ``level`` with ``n - 1`` degrees of freedom."""
    return float(sps.t.ppf(1 - (1 - level) / 2, n - 1)) if n > 1 else math.nan


def ratio_interval(y: np.ndarray, z: np.ndarray, level: float) -> tuple[float, tuple[float, float]]:
    """The ratio ``sum(y) / sum(z)`` over paired items and its t-interval from the
    linearised (ratio-estimator) variance; a weighted mean of ``x`` is ``y = w x, z = w``.
    The analytic counterpart of the paired bootstrap, without its Monte-Carlo noise."""
    total = float(z.sum())
    if total == 0:
        return math.nan, (math.nan, math.nan)
    ratio = float(y.sum()) / total
    n = len(y)
    if n < 2:
        return ratio, (math.nan, math.nan)
    residual = y - ratio * z
    se = math.sqrt(n / (n - 1) * float((residual**2).sum())) / abs(total)
    half = _t(level, n) * se
    return ratio, (ratio - half, ratio + half)


def clopper_pearson(k: int, n: int, level: float) -> tuple[float, float]:
    """Exact binomial interval for ``k`` successes in ``n`` trials."""
    if n == 0:
        return (0.0, 1.0)
    tail = (1 - level) / 2
    low = float(sps.beta.ppf(tail, k, n - k + 1)) if k > 0 else 0.0
    high = float(sps.beta.ppf(1 - tail, k + 1, n - k)) if k < n else 1.0
    return (low, high)


def compare_pair(base: pd.DataFrame, var: pd.DataFrame, metric: Metric, level: float, *,
                 variant: str = "", task: str = "", slice_: str = "") -> Comparison:  # fmt: skip
    """Compare aligned rows (same items, same order) of the baseline and a variant, with
    intervals at ``level``: Clopper-Pearson for the flip rate, linearised t-intervals
    for accuracy changes, perplexity ratios, KLD, top-1 and mean scores."""
    n = len(base)
    lost = gained = flip_rate = flip_ci = None
    weights = np.ones(n)
    if metric.outcome:
        b = base[metric.column].to_numpy(bool)
        v = var[metric.column].to_numpy(bool)
        base_value, value = float(b.mean()), float(v.mean())
        lost, gained = int((b & ~v).sum()), int((~b & v).sum())
        right = int(b.sum())
        loss = (lost - gained) / right if right else 0.0
        # linearised intervals over items, with one lost and one gained pseudo-item added
        # (the Agresti-Caffo / Bonett-Price adjustment: no zero-width interval from few flips)
        b_adj, v_adj = np.append(b, [True, False]), np.append(v, [False, True])
        ones = np.ones(n + 2)
        _, delta_ci = ratio_interval(v_adj.astype(float) - b_adj, ones, level)
        _, loss_ci = ratio_interval(b_adj.astype(float) - v_adj, b_adj.astype(float), level)
        flip_rate, flip_ci = lost / n, clopper_pearson(lost, n, level)
        p_value = sps.binomtest(lost, lost + gained, 0.5).pvalue if lost + gained else 1.0
    elif metric.perplexity:  # token-weighted: log ratio = sum(nll_v - nll_b) / sum(tokens)
        weights = base["n_tokens"].to_numpy(float)
        nb, nv = base["nll"].to_numpy(float), var["nll"].to_numpy(float)
        with np.errstate(divide="ignore", invalid="ignore"):
            diffs = (nv - nb) / weights  # for the signed-rank test
        base_value, value = math.exp(nb.sum() / weights.sum()), _exp(nv.sum() / weights.sum())
        log_ratio, (low, high) = ratio_interval(nv - nb, weights, level)
        loss, loss_ci = _expm1(log_ratio), (_expm1(low), _expm1(high))
        delta_ci = (base_value * loss_ci[0], base_value * loss_ci[1])
        p_value = _wilcoxon(diffs)
    else:  # a per-item score, averaged
        b = base[metric.column].to_numpy(float)
        v = var[metric.column].to_numpy(float)
        base_value, value = float(b.mean()), float(v.mean())
        _, delta_ci = ratio_interval(v - b, weights, level)
        loss = metric.loss(base_value, value)
        sign = -1 if metric.higher_is_better else 1
        scale = abs(base_value) or math.nan
        loss_ci = tuple(sorted(sign * x / scale for x in delta_ci))
        p_value = _wilcoxon(v - b)
    kld = top1 = kld_ci = top1_ci = None
    if var["kld"].notna().all():
        kld, kld_ci = ratio_interval(var["kld"].to_numpy(float) * weights, weights, level)
        top1, top1_ci = ratio_interval(var["top1_agree"].to_numpy(float) * weights, weights, level)
    return Comparison(
        **token_tails(var),
        variant=variant, task=task, slice=slice_, metric=metric.name, n=n,
        base_value=float(base_value), value=float(value), delta=float(value - base_value),
        delta_ci=delta_ci, loss=float(loss), loss_ci=loss_ci, lost=lost, gained=gained,
        flip_rate=flip_rate, flip_rate_ci=flip_ci, kld=kld, kld_ci=kld_ci,
        top1=top1, top1_ci=top1_ci, p_value=float(p_value), q_value=float(p_value), level=level,
    )  # fmt: skip


def _exp(x: float) -> float:
    return math.inf if x > 700 else math.exp(x)  # NaN stays NaN


def _expm1(x: float) -> float:
    return math.inf if x > 700 else math.expm1(x)


def _wilcoxon(diffs: np.ndarray) -> float:
    """Wilcoxon signed-rank p-value of paired differences (1 when all are zero; NaN when
    any is not finite)."""
    if not np.all(np.isfinite(diffs)):
        return math.nan
    return float(sps.wilcoxon(diffs).pvalue) if len(diffs) > 1 and np.any(diffs != 0) else 1.0


KLD_QUANTILES = {
    "kld_p50": 0.5,
    "kld_p90": 0.9,
    "kld_p95": 0.95,
    "kld_p99": 0.99,
    "kld_p999": 0.999,
}


def token_tails(var: pd.DataFrame) -> dict[str, float]:
    """KLD percentiles and maximum, and the RMS change of the gold token's probability,
    over every scored token of ``var``'s rows (empty when the rows carry no tokens)."""
    if "kld_tokens" not in var or var["kld_tokens"].isna().any() or var["dp_tokens"].isna().any():
        return {}
    kld = np.concatenate([np.asarray(t, dtype=float) for t in var["kld_tokens"]])
    dp = np.concatenate([np.asarray(t, dtype=float) for t in var["dp_tokens"]])
    if kld.size == 0:
        return {}
    tails = {name: float(np.quantile(kld, q)) for name, q in KLD_QUANTILES.items()}
    return {**tails, "kld_max": float(kld.max()), "dp_rms": float(np.sqrt(np.mean(dp**2)))}


def compare(items: pd.DataFrame, metrics: dict[str, str], *, alpha: float = 0.05,
            min_items: int = 1, family: int | None = None) -> list[Comparison]:  # fmt: skip
    """Every variant against the baseline on every task x slice with ``min_items`` items.

    ``metrics`` maps task name to its metric's name. Each variant's intervals are
    Bonferroni-simultaneous over its ``family`` of comparisons (default: those made
    here). Deterministic: no resampling.
    """
    rows = explode_slices(add_fragile(items))
    by_group = {
        key: g.set_index("item_id")
        for key, g in rows.groupby(["variant", "task", "slice"], sort=False)
    }
    variants = [v for v in dict.fromkeys(rows["variant"]) if v != "baseline"]
    out: list[Comparison] = []
    for variant in variants:
        groups = []
        for (name, task, slice_), var in by_group.items():
            base = by_group.get(("baseline", task, slice_))
            if name != variant or base is None:
                continue
            shared = base.index.intersection(var.index)  # pair item by item
            if len(shared) < min_items:
                continue
            groups.append((task, slice_, base.loc[shared], var.loc[shared]))
        level = 1 - alpha / max(family or len(groups), 1)
        for task, slice_, b, v in groups:
            metric = get_metric(metrics.get(task, "perplexity"))
            out.append(compare_pair(b, v, metric, level, variant=variant, task=task, slice_=slice_))
    if out:
        p_values = np.array([c.p_value for c in out])
        q_values = np.full(len(out), math.nan)
        finite = np.isfinite(p_values)
        if finite.any():
            q_values[finite] = sps.false_discovery_control(p_values[finite], method="bh")
        out = [_with_q(c, float(q)) for c, q in zip(out, q_values, strict=True)]
    return out


def family_size(baseline: pd.DataFrame, min_items: int = 1) -> int:
    """How many task x slice comparisons a complete variant gets against ``baseline``:
    the family its intervals are simultaneous over."""
    sizes = explode_slices(add_fragile(baseline)).groupby(["task", "slice"]).size()
    return int((sizes >= min_items).sum())


def _with_q(comparison: Comparison, q: float) -> Comparison:
    from dataclasses import replace

    return replace(comparison, q_value=q)


def comparisons_frame(comparisons: list[Comparison], split_intervals: bool = False) -> pd.DataFrame:
    """The comparisons as a table; ``split_intervals`` turns each ``(low, high)`` pair
    into ``<name>_low`` and ``<name>_high`` columns (for CSV)."""
    from dataclasses import asdict

    frame = pd.DataFrame([asdict(c) for c in comparisons])
    if split_intervals and not frame.empty:
        for column in [c for c in frame.columns if c.endswith("_ci")]:
            pairs = frame.pop(column).map(lambda v: v if isinstance(v, tuple) else (None, None))
            frame[f"{column}_low"] = [p[0] for p in pairs]
            frame[f"{column}_high"] = [p[1] for p in pairs]
    return frame


def find_knee(
    bits: list[int], losses: list[float], *, min_loss: float = 0.01, min_bend: float = 0.1
) -> int | None:
    """The bit width below which the loss per removed bit jumps (Kneedle).

    x is the number of bits removed from the widest point (16), y the loss (negative
    losses count as 0); both are scaled to [0, 1]. The knee is the point farthest below
    the diagonal from the first point to the last: up to it the curve is flat relative
    to its end, after it the loss takes off. No knee (``None``) when the curve never
    loses ``min_loss``; the widest point (16) when the very first step already loses
    ``min_loss`` and the curve bends by less than ``min_bend`` (no flat region at all).
    """
    order = sorted(range(len(bits)), key=lambda i: -bits[i])
    b = np.array([bits[i] for i in order], dtype=float)
    y = np.array([max(losses[i], 0.0) for i in order])
    if len(b) < 3 or y.max() < min_loss or not np.all(np.isfinite(y)):
        return None
    x_scaled = (b[0] - b) / (b[0] - b[-1])
    y_scaled = (y - y.min()) / (y.max() - y.min())
    bend = x_scaled - y_scaled
    k = int(np.argmax(bend))
    if bend[k] < min_bend or k == len(b) - 1:
        return int(b[0]) if y[1] >= min_loss else None
    return int(b[k]) if y[k + 1 :].max() >= min_loss else None


def knee_loss(comparison: Comparison) -> float:
    """The loss on the knee's scale: relative drop, or log perplexity ratio."""
    if not get_metric(comparison.metric).perplexity:
        return comparison.loss
    return math.log1p(comparison.loss) if comparison.loss > -1 else -math.inf


def families(variants: dict[str, VariantRecord]) -> dict[str, str]:
    """The curve each variant belongs to on a quality-versus-bits plot: its method, or,
    when a method has two variants at one bit width (two group sizes, nf4 and fp4), its
    name without the ``-wBITS`` part."""
    seen: dict[tuple[str, int], int] = {}
    for info in variants.values():
        key = (info.method, info.bits)
        seen[key] = seen.get(key, 0) + 1
    crowded = {method for (method, _), n in seen.items() if n > 1 and method != "none"}
    return {name: re.sub(r"-w\d+", "-", name).replace("--", "-").rstrip("-") if info.method in crowded
            else info.method for name, info in variants.items()}  # fmt: skip


ALL_TASKS = "all tasks"  # the knee of a slice over its tasks' mean loss


def knees(comparisons: list[Comparison], variants: dict[str, VariantRecord]) -> pd.DataFrame:
    """The one knee table: per method (curve, see :func:`families`) x task x slice, and
    per method x slice over all its tasks (``task == ALL_TASKS``: the mean of the tasks'
    :func:`knee_loss` at each variant), from the comparisons and each variant's bits."""
    records = []
    family = families(variants)
    by_key: dict[tuple[str, str, str], list[tuple[int, float]]] = {}
    by_slice: dict[tuple[str, str, str], list[float]] = {}
    for c in comparisons:
        key = (family[c.variant], c.task, c.slice)
        by_key.setdefault(key, []).append((variants[c.variant].bits, knee_loss(c)))
        by_slice.setdefault((family[c.variant], c.slice, c.variant), []).append(knee_loss(c))
    for (method, slice_, variant), losses in by_slice.items():
        point = (variants[variant].bits, float(np.mean(losses)))
        by_key.setdefault((method, ALL_TASKS, slice_), []).append(point)
    for (method, task, slice_), points in by_key.items():
        points = [(16, 0.0), *sorted(points, reverse=True)]
        knee = find_knee([p[0] for p in points], [p[1] for p in points])
        records.append({"method": method, "task": task, "slice": slice_, "knee_bits": knee,
                        "bits": [p[0] for p in points], "loss": [round(p[1], 6) for p in points]})  # fmt: skip
    return pd.DataFrame(records, columns=["method", "task", "slice", "knee_bits", "bits", "loss"])
