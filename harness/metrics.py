"""What a task metric means, as one record: the only place a metric's name is interpreted.

A :class:`Metric` says which item-row column holds its per-item value, whether higher is
better, how items aggregate (a mean, or a perplexity from token-weighted NLL), and
whether each item is a right/wrong outcome (then flips and McNemar's test apply).
A suite naming a metric that is not registered is refused when it is loaded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from harness.registry import Registry


@dataclass(frozen=True)
class Metric:
    name: str
    higher_is_better: bool
    column: str  # the ItemResult column holding the per-item value
    outcome: bool = False  # each item is right or wrong (``correct``-like): flips apply
    perplexity: bool = False  # aggregate: exp(sum nll / sum n_tokens), else the mean

    def value(self, rows: pd.DataFrame) -> float:
        """The metric over ``rows``."""
        if self.perplexity:
            tokens = rows["n_tokens"].sum()
            return math.exp(rows["nll"].sum() / tokens) if tokens else math.nan
        return float(rows[self.column].astype(float).mean()) if len(rows) else math.nan

    def loss(self, base: float, value: float) -> float:
        """Quality lost against the baseline, as a fraction: the relative drop of a
        higher-is-better mean, the relative increase of a perplexity."""
        if self.perplexity:
            return value / base - 1 if base > 0 else math.nan
        if base == 0:
            return 0.0 if value == base else math.nan
        return (base - value) / abs(base) if self.higher_is_better else (value - base) / abs(base)


METRICS: Registry[Metric] = Registry("metric")


def register_metric(metric: Metric) -> Metric:
    METRICS.register(metric.name, metric)
    return metric


for _metric in (
    Metric("acc", True, "correct", outcome=True),
    Metric("acc_norm", True, "correct_norm", outcome=True),
    Metric("exact_match", True, "correct", outcome=True),
    Metric("greedy_match", True, "correct", outcome=True),
    Metric("perplexity", False, "nll", perplexity=True),
    # lm-eval's loglikelihood_rolling metrics: nll and n_tokens count words or bytes
    Metric("word_perplexity", False, "nll", perplexity=True),
    Metric("byte_perplexity", False, "nll", perplexity=True),
    # per-item scores averaged (lm-eval's f1 on a document, say)
    Metric("f1", True, "score"),
):
    register_metric(_metric)


def get_metric(name: str) -> Metric:
    """The registered metric (``UnknownName``, naming the known ones, otherwise)."""
    return METRICS.get(name)
