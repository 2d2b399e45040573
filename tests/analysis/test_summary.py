"""Summaries against hand computations on a synthetic table."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from harness.analysis.summary import summarize
from harness.manifest import parse


def test_summary_values_and_deltas():
    rows = []
    for variant, nlls, correct, kld in [
        ("baseline", (2.0, 4.0), (1, 1, 0, 1), None),
        ("v", (3.0, 6.0), (1, 0, 0, 0), 0.5),
    ]:
        for i, nll in enumerate(nlls):
            rows.append({"variant": variant, "task": "ppl", "slices": ["general"], "margin": None, "gold_logprob": -nll, "item_id": str(i), "nll": nll, "n_tokens": 1 + i * 3,
                         "correct": None, "correct_norm": None, "kld": None if kld is None else kld * (i + 1),
                         "top1_agree": None if kld is None else 0.5})  # fmt: skip
        for i, c in enumerate(correct):
            rows.append({"variant": variant, "task": "acc", "slices": ["x"] if i < 2 else [], "margin": None, "gold_logprob": -1.0, "item_id": str(i), "nll": 1.0, "n_tokens": 1,
                         "correct": bool(c), "correct_norm": bool(c), "kld": kld, "top1_agree": None if kld is None else 1.0})  # fmt: skip
    manifest = {
        "suite": {"tasks": [{"name": "ppl", "kind": "perplexity", "metric": "perplexity"},
                            {"name": "acc", "kind": "generate", "metric": "exact_match"}]},
        "variants": {"baseline": {"method": "none", "bits": 16, "effective_bits": 16.0, "model_bytes": 8},
                     "v": {"method": "rtn", "bits": 4, "effective_bits": 4.25, "model_bytes": 2}},
    }  # fmt: skip
    full = summarize(pd.DataFrame(rows), parse(manifest))
    summary = full[full["slice"] == "all"].set_index(["variant", "task"])
    sliced = full.set_index(["variant", "task", "slice"])
    assert (
        sliced.loc[("v", "acc", "x"), "value"] == 0.5
        and sliced.loc[("baseline", "acc", "x"), "n"] == 2
    )
    assert sliced.loc[("v", "ppl", "general"), "value"] == pytest.approx(math.exp(9.0 / 5))
    assert summary.loc[("baseline", "ppl"), "value"] == pytest.approx(
        math.exp(6.0 / 5)
    )  # token-weighted
    assert summary.loc[("v", "ppl"), "value"] == pytest.approx(math.exp(9.0 / 5))
    assert summary.loc[("v", "ppl"), "kld"] == pytest.approx((0.5 * 1 + 1.0 * 4) / 5)
    assert summary.loc[("baseline", "acc"), "value"] == 0.75
    assert summary.loc[("v", "acc"), "delta"] == pytest.approx(-0.5)
    assert summary.loc[("v", "acc"), "rel_delta"] == pytest.approx(-0.5 / 0.75)
    assert summary.loc[("v", "acc"), "effective_bits"] == 4.25
    assert list(summary.index.get_level_values(0)) == ["baseline", "baseline", "v", "v"]
