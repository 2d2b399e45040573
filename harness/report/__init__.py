"""Reports written from stored results only: never needs the model.

Every file is a pure function of the stored rows, the manifest and the analysis, so
``qharness report`` rewrites them byte for byte (timestamps live in the manifest only).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from harness.analysis.stats import ALL_TASKS, comparisons_frame, families
from harness.analysis.summary import summarize
from harness.records import Verdict
from harness.report import plots, views
from harness.report.findings import what_broke
from harness.report.html import write_html
from harness.report.junit import write_junit
from harness.report.markdown import write_markdown
from harness.store import RunStore, write_json

PLOTS = {"knee": "plots/knee.png", "slices": "plots/knee_slices.png", "pareto": "plots/pareto.png",
         "heatmap": "plots/heatmap.png", "flips": "plots/flips.png"}  # fmt: skip


def write_analysis(store: RunStore, analysis, junit: Path | None = None) -> dict[str, Path]:
    """Every file of an analysed run: ``gate.json``, ``comparisons.csv``, ``power.csv``,
    the optional JUnit file, and the reports (:func:`write_reports`)."""
    from harness.analysis.analyse import gate_record

    write_json(store.root / "gate.json", gate_record(analysis))
    comparisons_frame(analysis.comparisons, split_intervals=True).to_csv(
        store.root / "comparisons.csv", index=False, float_format="%.6g"
    )
    analysis.power.to_csv(store.root / "power.csv", index=False, float_format="%.6g")
    if junit is not None:
        write_junit(analysis.verdict, junit)
    return write_reports(store, comparisons=comparisons_frame(analysis.comparisons), knees=analysis.knees,
                         verdict=analysis.verdict, items=analysis.items, power=analysis.power)  # fmt: skip


def write_reports(
    store: RunStore,
    *,
    comparisons: pd.DataFrame | None = None,
    knees: pd.DataFrame | None = None,
    verdict: Verdict | None = None,
    items: pd.DataFrame | None = None,
    power: pd.DataFrame | None = None,
) -> dict[str, Path]:
    """(Re)write ``summary.csv``, the plots, ``report.md`` and ``report.html``."""
    manifest = store.manifest()
    items = store.load_items() if items is None else items
    comparisons = pd.DataFrame() if comparisons is None else comparisons
    summary = summarize(items, manifest)
    root = store.root
    paths = {name: root / rel for name, rel in PLOTS.items()}
    paths |= {
        "summary": root / "summary.csv",
        "report": root / "report.md",
        "html": root / "report.html",
    }
    summary.to_csv(paths["summary"], index=False, float_format="%.6g")

    variants = manifest.variants_in(summary["variant"])
    family = families(variants)
    table = views.variant_table(summary, comparisons, manifest, verdict)
    grid = views.method_by_bits(table, manifest)
    per_slice = views.slice_kept(comparisons)
    slices = views.slice_order(per_slice["slice"]) if len(per_slice) else []
    slice_knees = None if knees is None else knees[knees["task"] == ALL_TASKS]
    findings = verdict.findings if verdict is not None else []

    plots.plot_knee(
        summary[summary["slice"] == "all"],
        paths["knee"],
        comparisons=None if comparisons.empty else comparisons,
        knees=knees,
    )
    declared = {s for t in manifest.tasks for s in t.slices}
    headline = [s for s in slices if s == "all" or s in declared or s == "fragile"] or ["all"]
    plots.plot_slices(per_slice, variants, family, slice_knees, headline, paths["slices"])
    plots.plot_pareto(table, family, paths["pareto"])
    heat = _heat(per_slice, table, slices)
    flags = pd.DataFrame(
        [[views.worst_severity(findings, v, s) for v in heat.columns] for s in heat.index]
    )
    plots.plot_heatmap(heat, flags, paths["heatmap"])
    flips = _flips(comparisons, table)
    plots.plot_flips(flips, paths["flips"])

    links = {"full report": "report.html", "quality per slice": PLOTS["slices"], "per task": PLOTS["knee"],
             "size vs quality": PLOTS["pareto"], "heat map": PLOTS["heatmap"]}  # fmt: skip
    if (root / "diagnostics" / "diagnostics.md").exists():
        links["why it breaks"] = "diagnostics/diagnostics.md"
    knees_shown = (
        slice_knees[slice_knees["slice"].isin(headline)] if slice_knees is not None else None
    )
    top, rest = what_broke(verdict, items, manifest, power)
    write_markdown(paths["report"], table, grid, manifest, verdict, links, knees_shown, top, rest)
    write_html(
        paths["html"], manifest=manifest, verdict=verdict, table=table, grid=grid,
        ppl_grid=views.method_by_bits(table, manifest, "ppl") if table["ppl"].notna().any() else pd.DataFrame(),
        flips=flips, examples=views.broken_examples(items, findings, variants),
        flags=_flag_lines(findings, table), images={k: paths[k] for k in PLOTS}, top=top, rest=rest, power=power,
    )  # fmt: skip
    return paths


def _heat(per_slice: pd.DataFrame, table: pd.DataFrame, slices: list[str]) -> pd.DataFrame:
    order = [v for v in table["variant"] if v != "baseline"]
    if per_slice.empty or not order:
        return pd.DataFrame([[float("nan")]], index=["all"], columns=["(no variants)"])
    grid = per_slice.pivot_table(index="slice", columns="variant", values="kept", sort=False)
    return grid.reindex(index=slices, columns=order)


def _flips(comparisons: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    if comparisons.empty:
        return pd.DataFrame(columns=["variant", "items", "lost", "gained", "net"])
    overall = comparisons[(comparisons["slice"] == "all") & comparisons["lost"].notna()]
    if overall.empty:
        return pd.DataFrame(columns=["variant", "items", "lost", "gained", "net"])
    sums = overall.groupby("variant", sort=False).agg(
        items=("n", "sum"), lost=("lost", "sum"), gained=("gained", "sum")
    )
    order = [v for v in table["variant"] if v in sums.index]
    sums = sums.reindex(order).astype(int).reset_index()
    return sums.assign(net=sums["gained"] - sums["lost"])


def _flag_lines(findings, table: pd.DataFrame) -> list[str]:
    rank = {v: i for i, v in enumerate(table["variant"])}
    flagged = [f for f in findings if f.severity != "pass"]
    flagged.sort(key=lambda f: (rank.get(f.variant, 0), f.severity != "fail", f.task, f.slice))
    return [f"[{f.severity}] {f.message}" for f in flagged]
