"""Per-item rows -> one summary row per variant x task (metric, n, value, delta)."""

from __future__ import annotations

import math

import pandas as pd

from harness.analysis.stats import add_fragile, explode_slices, families
from harness.manifest import Manifest
from harness.metrics import Metric, get_metric

SUMMARY_COLUMNS = [
    "variant", "method", "bits", "effective_bits", "model_bytes", "task", "slice", "kind", "metric",
    "n", "value", "baseline", "delta", "rel_delta", "kld", "top1_agree",
]  # fmt: skip


def summarize(items: pd.DataFrame, manifest: Manifest) -> pd.DataFrame:
    """One row per variant x task x slice (``all`` first, then declared, item-level and
    automatic slices), variants in manifest order, baseline first."""
    tasks = {t.name: t for t in manifest.tasks}
    variants = manifest.variants
    order = [v for v in variants if v in set(items["variant"])]
    family = families(variants)
    baseline = {}
    out = []
    exploded = explode_slices(add_fragile(items))
    for variant in order:
        info = variants[variant]
        mine = exploded[exploded["variant"] == variant]
        for (task_name, slice_), rows in mine.groupby(["task", "slice"], sort=False):
            task = tasks[task_name]
            metric = get_metric(task.metric)
            value = metric.value(rows)
            if variant == "baseline":
                baseline[task_name, slice_] = value
            base = baseline.get((task_name, slice_), math.nan)
            out.append(
                {
                    "variant": variant,
                    "method": family.get(variant, "none"),
                    "bits": info.bits,
                    "effective_bits": info.effective_bits,
                    "model_bytes": info.model_bytes,
                    "task": task_name,
                    "slice": slice_,
                    "kind": task.kind,
                    "metric": metric.name,
                    "n": len(rows),
                    "value": value,
                    "baseline": base,
                    "delta": value - base,
                    "rel_delta": (value - base) / base if base else math.nan,
                    "kld": _mean(rows, "kld", metric) if variant != "baseline" else 0.0,
                    "top1_agree": _mean(rows, "top1_agree", metric)
                    if variant != "baseline"
                    else 1.0,
                }
            )
    return pd.DataFrame(out, columns=SUMMARY_COLUMNS)


def _mean(rows: pd.DataFrame, column: str, metric: Metric) -> float:
    """Item mean; for perplexity, weighted by tokens (so it is the mean over tokens)."""
    values = rows[column].astype(float)
    if metric.perplexity:
        weights = rows["n_tokens"].astype(float)
        return float((values * weights).sum() / weights.sum())
    return float(values.mean())
