"""Two runs side by side, paired on the items both evaluated."""

from __future__ import annotations

import pandas as pd
import pytest

from harness.analysis.compare import compare_runs
from harness.cli import EXIT_OK, EXIT_USAGE, main
from tests.synthetic import make_items, manifest, store_run

SIZES = {"w4": (4, 4.25, 300), "w2": (2, 2.25, 200)}


def two_runs(tmp_path, effects_b, keep=60):
    a = store_run(
        tmp_path / "a",
        make_items(7, {"w4": {"noise": 0.0}, "w2": {"noise": 0.0}}, n=60),
        manifest(SIZES),
    )
    b_items = make_items(7, effects_b, n=60)  # same seed: the same baseline items
    b_items = b_items[b_items["item_id"].astype(int) < keep]
    b = store_run(tmp_path / "b", b_items, manifest({v: SIZES[v] for v in effects_b}))
    return a.root, b.root


def test_same_runs_compare_equal_and_a_drop_is_measured(tmp_path):
    run_a, run_b = two_runs(tmp_path, {"w4": {"noise": 0.0}, "w2": {"drop": {"arithmetic": 0.8}}})
    table, notes = compare_runs(run_a, run_b)
    overall = table[table["slice"] == "all"].set_index(["variant_a", "task"])
    assert (overall.loc["baseline", "delta"] == 0).all()
    drop = overall.loc[("w2", "mc_arithmetic")]
    assert drop["delta"] < -0.3 and drop["delta_ci_high"] < 0 and drop["lost"] > 20
    assert abs(overall.loc[("w2", "mc_general"), "delta"]) < 0.1
    assert notes == []


def test_shared_items_only_and_explicit_pairs(tmp_path, capsys):
    run_a, run_b = two_runs(tmp_path, {"w4": {"noise": 0.0}}, keep=30)
    table, _ = compare_runs(run_a, run_b, ["w2:w4"])
    assert set(table["variant_a"]) == {"w2"} and set(table["variant_b"]) == {"w4"}
    assert (table.loc[table["slice"] == "all", "n"] == 30).all()  # B evaluated only 30 items
    out = tmp_path / "cmp"
    assert main(["compare", str(run_a), str(run_b), "--out", str(out)]) == EXIT_OK
    text = (out / "compare.md").read_text()
    assert "| baseline | baseline | mc_rare |" in text and "| w4 | w4 | text |" in text
    assert len(pd.read_csv(out / "compare.csv")) > 0
    assert main(["compare", str(run_a), str(run_b), "--pair", "w3:w4"]) == EXIT_USAGE
    assert "run A has no variant 'w3'" in capsys.readouterr().err


def test_different_tokenizations_are_not_compared_per_token(tmp_path):
    run_a, run_b = two_runs(tmp_path, {"w4": {"noise": 0.0}})
    items = pd.read_parquet(run_b / "items.parquet")
    items.loc[items["task"] == "text", "n_tokens"] += 1
    from harness.records import ItemResult
    from harness.store import RunStore

    store = RunStore(run_b)
    for (variant, task), rows in items.groupby(["variant", "task"], sort=False):
        store.append(
            variant,
            task,
            [ItemResult(**{**r, "slices": tuple(r["slices"])}) for r in rows.to_dict("records")],
        )
    table, notes = compare_runs(run_a, run_b)
    assert "text" not in set(table["task"])
    assert any("tokenize differently" in n for n in notes)


def test_runs_with_nothing_in_common_are_a_usage_error(tmp_path, capsys):
    a = store_run(tmp_path / "a", make_items(1, {"w4": {}}, n=10), manifest({"w4": SIZES["w4"]}))
    items = make_items(1, {"w4": {}}, n=10)
    items["variant"] = items["variant"].replace({"baseline": "base-x", "w4": "other"})
    b = store_run(tmp_path / "b", items, manifest({}))
    with pytest.raises(Exception, match="share no variant name"):
        compare_runs(a.root, b.root)
    assert main(["compare", str(a.root), str(b.root)]) == EXIT_USAGE
