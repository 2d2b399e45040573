"""Each metric's aggregate and loss against independent computations."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from harness.metrics import get_metric
from harness.registry import UnknownName


def test_perplexity_is_token_weighted_and_accuracy_is_the_mean():
    rng = np.random.default_rng(0)
    tokens = rng.integers(5, 50, size=20)
    nll = rng.random(20) * tokens * 3
    rows = pd.DataFrame({"nll": nll, "n_tokens": tokens, "correct": rng.random(20) < 0.6})
    assert get_metric("perplexity").value(rows) == pytest.approx(
        float(np.exp(nll.sum() / tokens.sum()))
    )
    assert get_metric("acc").value(rows) == pytest.approx(float(np.mean(rows["correct"])))
    assert math.isnan(get_metric("acc").value(rows.iloc[:0]))


def test_loss_is_relative_in_the_direction_that_hurts():
    assert get_metric("acc").loss(0.8, 0.6) == pytest.approx(0.25)  # a 25% relative drop
    assert get_metric("acc").loss(0.8, 0.9) == pytest.approx(-0.125)  # a gain is a negative loss
    assert get_metric("perplexity").loss(10.0, 12.5) == pytest.approx(0.25)
    assert get_metric("acc").loss(0.0, 0.0) == 0.0 and math.isnan(get_metric("acc").loss(0.0, 0.5))


def test_outcome_metrics_are_the_right_or_wrong_ones():
    assert {name for name in ("acc", "acc_norm", "exact_match", "greedy_match", "f1", "perplexity")
            if get_metric(name).outcome} == {"acc", "acc_norm", "exact_match", "greedy_match"}  # fmt: skip
    with pytest.raises(UnknownName, match="unknown metric 'acc_nrom'; did you mean 'acc_norm'"):
        get_metric("acc_nrom")
    with pytest.raises(UnknownName, match=r"unknown metric 'bleu' \(known: acc, acc_norm"):
        get_metric("bleu")
