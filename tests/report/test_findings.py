"""What broke, first: ranked findings with examples, the rest by slice, the terminal summary."""

from __future__ import annotations

import re

from harness.cli import main
from harness.report.findings import TOP, rank
from tests.synthetic import make_items, manifest, store_run

EFFECTS = {"w8": {"noise": 0.01}, "w4": {"drop": {"arithmetic": 0.3}},
           "w2": {"drop": {"general": 0.9, "arithmetic": 0.9, "rare": 0.9}, "ppl_shift": 2}}  # fmt: skip
SIZES = {"w8": (8, 8.25, 500), "w4": (4, 4.25, 300), "w2": (2, 2.25, 200)}


def test_report_leads_with_at_most_ten_ranked_findings_and_their_examples(tmp_path, capsys):
    items = make_items(3, EFFECTS, n=80)
    items["prediction"] = items["item_id"]  # something to show as an example
    store = store_run(tmp_path / "run", items, manifest(SIZES) | {"run_name": "run"})
    main(["gate", str(store.root)])
    out = capsys.readouterr().out.strip().splitlines()
    text = (store.root / "report.md").read_text()
    head = text.split("| variant | bits/w |")[0]  # everything above the variant table
    rows = [line for line in head.splitlines() if re.match(r"\| \d+ \|", line)]
    assert 0 < len(rows) <= TOP and head.index("**Gate: PASSED**") < head.index("**What broke**")
    severities = [row.split(" | ")[1] for row in rows]
    assert severities == sorted(severities, key=lambda s: s != "FAIL") and severities[0] == "FAIL"
    assert rows[0].split(" | ")[2] == "w2"  # the collapsed variant's findings come first
    first = next(row.split(" | ") for row in rows if "accuracy drop" in row)
    task, slice_ = first[3].replace("\\_", "_").split(" / ")
    examples = [e.split(":")[0] for e in first[-1].rstrip(" |").split("; ")]
    base = items[(items["variant"] == "baseline") & (items["task"] == task)].set_index("item_id")
    mine = items[(items["variant"] == "w2") & (items["task"] == task)].set_index("item_id")
    assert len(examples) == 2 and all(
        base.at[i, "correct"] and not mine.at[i, "correct"] for i in examples
    )
    assert any(
        line.startswith("- ") and "more" in line for line in head.splitlines()
    )  # the rest, by slice
    assert len(out) <= 15 and "gate (harm mode): PASSED" in "\n".join(out)


def test_ranking_puts_failures_first_then_what_a_slice_can_resolve_and_keeps_one_per_slice():
    from harness.records import Finding

    def finding(severity, observed, slice_="s", rule="max_drop ≤ 5.0% [*]", variant="v"):
        return Finding(
            rule, severity, variant, "t", slice_, "max_drop", observed, 0.05, (0.0, 1.0), ""
        )

    warn_big = finding("warn", 0.9, slice_="tiny")
    warn_small = finding("warn", 0.2, slice_="big")
    fail = finding("fail", 0.1, slice_="mid")
    twice = finding("fail", 0.08, slice_="mid", rule="max_flip_rate ≤ 10.0% [*]")
    blind = {("t", "tiny", warn_big.rule): False, ("t", "big", warn_small.rule): True}
    assert rank([warn_big, warn_small, fail, twice, finding("pass", 0.0)], blind) == [
        fail,
        warn_small,
        warn_big,
    ]
