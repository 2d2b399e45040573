"""Reports written from stored results only: never needs the model."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from harness.records import Verdict
from harness.report.markdown import write_markdown
from harness.report.plots import plot_knee
from harness.store import RunStore
from harness.summary import summarize


def write_reports(
    store: RunStore,
    *,
    comparisons: pd.DataFrame | None = None,
    knees: pd.DataFrame | None = None,
    verdict: Verdict | None = None,
    items: pd.DataFrame | None = None,
) -> dict[str, Path]:
    """(Re)write ``summary.csv``, ``plots/knee.png`` and ``report.md`` of a stored run.
    With the analysis (comparisons, knees, verdict) the plot gets interval bands and
    knee marks, and the report opens with the verdict."""
    manifest = store.manifest()
    summary = summarize(store.load_items() if items is None else items, manifest)
    paths = {
        "summary": store.root / "summary.csv",
        "knee": store.root / "plots" / "knee.png",
        "report": store.root / "report.md",
    }
    summary.to_csv(paths["summary"], index=False, float_format="%.6g")
    plot_knee(
        summary[summary["slice"] == "all"], paths["knee"], comparisons=comparisons, knees=knees
    )
    write_markdown(
        summary,
        manifest,
        paths["report"],
        plots={"knee": "plots/knee.png"},
        knees=knees,
        verdict=verdict,
        diagnostics="diagnostics/diagnostics.md"
        if (store.root / "diagnostics" / "diagnostics.md").exists()
        else None,
    )
    return paths
