"""analyse() returns data and writes no file; write_analysis writes what it returned."""

from __future__ import annotations

import json

from harness.analysis.analyse import analyse, gate_record
from harness.analysis.stats import ALL_TASKS
from harness.report import write_analysis
from tests.synthetic import EFFECTS, SIZES, gate, make_items, manifest, store_run


def test_analysis_is_data_equal_to_the_gate_applied_directly(tmp_path):
    items = make_items(3, EFFECTS, n=60)
    store = store_run(tmp_path / "run", items, manifest(SIZES))
    before = sorted(p.name for p in store.root.iterdir())
    analysis = analyse(store)
    assert (
        sorted(p.name for p in store.root.iterdir()) == before
    )  # nothing written but the manifest
    direct = gate(items, list(EFFECTS))
    assert analysis.verdict.recommended_variant == direct.recommended_variant
    assert [v.passed for v in analysis.verdict.variants] == [v.passed for v in direct.variants]
    assert (
        store.manifest().policy["source"] == analysis.policy.source
    )  # the policy used is recorded
    per_slice = analysis.knees[analysis.knees["task"] == ALL_TASKS]
    assert set(per_slice["slice"]) == set(
        analysis.knees["slice"]
    )  # one knee table, per task and per slice
    paths = write_analysis(store, analysis)
    assert paths["report"].exists()
    assert json.loads((store.root / "gate.json").read_text()) == json.loads(
        json.dumps(gate_record(analysis))
    )
