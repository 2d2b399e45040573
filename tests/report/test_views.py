"""The tables behind the reports."""

from __future__ import annotations

import pandas as pd

from harness.records import Finding
from harness.report.views import broken_examples
from tests.synthetic import records


def test_broken_examples_show_both_outputs():
    row = {"slices": ("arithmetic",), "correct_norm": None, "score": 0.0, "nll": 1.0, "gold_logprob": -1.0,
           "n_tokens": 1, "kld": None, "top1_agree": None, "margin": None}  # fmt: skip
    items = pd.DataFrame([
        {**row, "variant": "baseline", "task": "add", "item_id": "1", "correct": True, "prediction": "7", "target": "7"},
        {**row, "variant": "baseline", "task": "add", "item_id": "2", "correct": False, "prediction": "3", "target": "4"},
        {**row, "variant": "w2", "task": "add", "item_id": "1", "correct": False, "prediction": "9", "target": "7"},
        {**row, "variant": "w2", "task": "add", "item_id": "2", "correct": False, "prediction": "5", "target": "4"},
    ])  # fmt: skip
    finding = Finding(rule="max_drop", severity="fail", variant="w2", task="add", slice="all", metric="exact_match",
                      observed=0.5, threshold=0.05, ci=(0.1, 0.9), message="lost")  # fmt: skip
    examples = broken_examples(items, [finding], records({"w2": (2, 2.5, 10)}))
    assert examples == [
        {
            "variant": "w2",
            "task": "add",
            "item_id": "1",
            "target": "7",
            "baseline": "7",
            "output": "9",
        }
    ]
