"""Plots (matplotlib, Agg backend): quality versus bits, 16 down to 2."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

# Okabe-Ito: distinguishable with the common colour-vision deficiencies
PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000"]
METRIC_LABEL = {"perplexity": "perplexity (log scale, lower is better)", "acc": "accuracy",
                "acc_norm": "accuracy (length-normalised)", "exact_match": "exact match",
                "greedy_match": "greedy match"}  # fmt: skip


def plot_knee(
    summary: pd.DataFrame,
    path: Path,
    comparisons: pd.DataFrame | None = None,
    knees: pd.DataFrame | None = None,
) -> Path:
    """One panel per task: the task metric against bits (16 = baseline), a line per
    method, with the paired interval of each variant as a band and the knee (over all
    items) marked with a ring."""
    tasks = list(dict.fromkeys(summary["task"]))
    cols = max(1, min(len(tasks), 4))
    rows = max(1, math.ceil(len(tasks) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for ax in axes.flat[len(tasks) :]:
        ax.set_visible(False)
    bit_ticks = sorted(set(summary["bits"].astype(int)) | {16}, reverse=True)
    positions = {b: i for i, b in enumerate(bit_ticks)}  # evenly spaced, 16 on the left
    for ax, task in zip(axes.flat, tasks, strict=False):
        rows = summary[summary["task"] == task]
        base = rows[rows["variant"] == "baseline"]
        metric = rows["metric"].iloc[0]
        methods = [m for m in dict.fromkeys(rows["method"]) if m != "none"]
        for colour, method in zip(PALETTE, methods, strict=False):
            line = pd.concat([base, rows[rows["method"] == method]]).sort_values(
                "bits", ascending=False
            )
            xs = [positions[int(b)] for b in line["bits"]]
            ax.plot(xs, line["value"], marker="o", color=colour, label=method)
            band = _band(line, task, comparisons)
            if band is not None:
                low, high = band
                if metric != "perplexity":  # accuracies live in [0, 1]
                    low, high = [max(v, 0.0) for v in low], [min(v, 1.0) for v in high]
                ax.fill_between(xs, low, high, color=colour, alpha=0.18, linewidth=0)
            knee = _knee(knees, method, task)
            knee_value = line.loc[line["bits"] == knee, "value"]
            if knee in positions and len(knee_value):
                ax.plot([positions[knee]], [float(knee_value.iloc[0])], marker="o", markersize=14,
                        markerfacecolor="none", markeredgecolor=colour, markeredgewidth=2,
                        label=f"{method} knee: {knee} bits")  # fmt: skip
        if not methods and len(base):
            ax.plot([positions[16]], base["value"], marker="o", color=PALETTE[0], label="baseline")
        ax.set_xticks(range(len(bit_ticks)), [str(b) for b in bit_ticks])
        ax.set_xlabel("weight bits (16 = baseline)")
        ax.set_ylabel(METRIC_LABEL.get(metric, metric))
        if metric == "perplexity":
            ax.set_yscale("log")
        else:
            ax.set_ylim(-0.02, 1.02)
        ax.set_title(task)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)
    return path


def _band(line: pd.DataFrame, task: str, comparisons: pd.DataFrame | None):
    """Lower and upper edges of each point's interval (base + paired delta interval)."""
    if comparisons is None or comparisons.empty:
        return None
    lows, highs = [], []
    for row in line.itertuples(index=False):
        if row.variant == "baseline":
            lows.append(row.value)
            highs.append(row.value)
            continue
        match = comparisons[(comparisons["variant"] == row.variant) & (comparisons["task"] == task)
                            & (comparisons["slice"] == "all")]  # fmt: skip
        if match.empty:
            return None
        low, high = match.iloc[0]["delta_ci"]
        lows.append(row.baseline + low)
        highs.append(row.baseline + high)
    return lows, highs


def _knee(knees: pd.DataFrame | None, method: str, task: str) -> int | None:
    if knees is None or knees.empty:
        return None
    match = knees[(knees["method"] == method) & (knees["task"] == task) & (knees["slice"] == "all")]
    if match.empty or pd.isna(match.iloc[0]["knee_bits"]):
        return None
    return int(match.iloc[0]["knee_bits"])
