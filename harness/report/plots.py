"""Plots (matplotlib, Agg backend): quality versus bits, 16 down to 2."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
matplotlib.rcParams["text.parse_math"] = False  # a "$" in a task or slice name is just text
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


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)
    return path


def plot_slices(
    per_slice: pd.DataFrame,
    variants: dict,
    family: dict,
    slice_knees: pd.DataFrame | None,
    slices,
    path: Path,
) -> Path:
    """One panel per slice: quality kept (% of baseline) against bits, a line per method,
    the band spanning the mean of the slice's per-task intervals, the knee ringed."""
    cols = max(1, min(len(slices), 4))
    rows = max(1, math.ceil(len(slices) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.3 * rows), squeeze=False)
    for ax in axes.flat[len(slices) :]:
        ax.set_visible(False)
    bits = sorted({v.bits for v in variants.values()} | {16}, reverse=True)
    x_of = {b: i for i, b in enumerate(bits)}
    methods = [m for m in dict.fromkeys(family.values()) if m != "none"]
    for ax, slice_ in zip(axes.flat, slices, strict=False):
        mine = per_slice[per_slice["slice"] == slice_]
        for colour, method in zip(PALETTE, methods, strict=False):
            line = (
                mine[mine["variant"].map(family) == method]
                .assign(bits=lambda t: t["variant"].map(lambda v: variants[v].bits))
                .sort_values("bits", ascending=False)
            )
            if line.empty:
                continue
            xs = [x_of[16], *(x_of[b] for b in line["bits"])]
            ax.plot(xs, [100, *(100 * line["kept"])], marker="o", color=colour, label=method)
            ax.fill_between(xs, [100, *(100 * line["low"])], [100, *(100 * line["high"])],
                            color=colour, alpha=0.15, linewidth=0)  # fmt: skip
            knee = pd.DataFrame() if slice_knees is None else \
                slice_knees[(slice_knees["method"] == method) & (slice_knees["slice"] == slice_)]  # fmt: skip
            if len(knee) and not pd.isna(knee.iloc[0]["knee_bits"]):
                k = int(knee.iloc[0]["knee_bits"])
                y = 100.0 if k == 16 else float(100 * line.loc[line["bits"] == k, "kept"].iloc[0])
                ax.plot([x_of[k]], [y], marker="o", markersize=14, markerfacecolor="none",
                        markeredgecolor=colour, markeredgewidth=2)  # fmt: skip
        n_tasks = int(mine["tasks"].max()) if len(mine) else 0
        ax.set_title(f"{slice_} ({n_tasks} task{'s' * (n_tasks != 1)})")
        ax.set_xticks(range(len(bits)), [str(b) for b in bits])
        ax.set_xlabel("weight bits (16 = baseline)")
        ax.set_ylabel("quality kept (% of baseline)")
        ax.set_ylim(-3, 115)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower left")
    return _save(fig, path)


def plot_pareto(table: pd.DataFrame, family: dict, path: Path) -> Path:
    """Quality kept (all tasks) against model size; the Pareto front (no other variant is
    both smaller and better) drawn as a step line, points labelled by bits."""
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    methods = [m for m in dict.fromkeys(table["variant"].map(family)) if m not in (None, "none")]
    colours = dict(zip(methods, PALETTE, strict=False))
    mib = table["model_bytes"].astype(float) / 2**20
    quality = 100 * table["kept"]
    for name, size, q, bits in zip(table["variant"], mib, quality, table["bits"], strict=True):
        method = family.get(name, "none")
        colour = colours.get(method, "#000000")
        ax.plot(
            [size], [q], marker="s" if name == "baseline" else "o", color=colour, linestyle="none"
        )
        ax.annotate("16" if name == "baseline" else str(bits), (size, q), textcoords="offset points",
                    xytext=(4, 4), fontsize=7, color=colour)  # fmt: skip
    front = pareto_front(mib.tolist(), quality.tolist())
    ax.step([mib.iloc[i] for i in front], [quality.iloc[i] for i in front], where="post",
            color="#555555", linestyle="--", linewidth=1, label="Pareto front")  # fmt: skip
    for method in methods:
        ax.plot([], [], marker="o", color=colours[method], linestyle="none", label=method)
    ax.set_xlabel("model size (MiB; quantized layers packed, the rest at 16 bits)")
    ax.set_ylabel("quality kept, all tasks (% of baseline)")
    ax.set_ylim(-3, 115)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)


def pareto_front(sizes: list[float], quality: list[float]) -> list[int]:
    """Indices of the points no other point beats on both size (smaller) and quality
    (higher), from smallest to largest."""
    order = sorted(range(len(sizes)), key=lambda i: (sizes[i], -quality[i]))
    front, best = [], -math.inf
    for i in order:
        if quality[i] > best:
            front.append(i)
            best = quality[i]
    return front


def plot_heatmap(grid: pd.DataFrame, flags: pd.DataFrame, path: Path) -> Path:
    """Slice x variant heat map of quality kept, each cell annotated, with ✗ for a failed
    gate rule and ! for a warning."""
    from matplotlib.colors import LinearSegmentedColormap

    cmap = LinearSegmentedColormap.from_list("kept", ["#D55E00", "#F0E442", "#FFFFFF"])
    fig, ax = plt.subplots(figsize=(1.0 + 0.62 * len(grid.columns), 0.9 + 0.42 * len(grid.index)))
    image = ax.imshow(100 * grid.to_numpy(dtype=float), cmap=cmap, vmin=0, vmax=100, aspect="auto")
    for (r, c), value in pd.DataFrame(grid.to_numpy(dtype=float)).stack().items():
        mark = {"fail": " ✗", "warn": " !"}.get(flags.iat[r, c], "")
        ax.text(c, r, f"{100 * value:.0f}{mark}", ha="center", va="center", fontsize=7)
    ax.set_xticks(range(len(grid.columns)), grid.columns, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(grid.index)), grid.index, fontsize=8)
    fig.colorbar(image, ax=ax, label="quality kept (% of baseline)", shrink=0.8)
    return _save(fig, path)


def plot_flips(flips: pd.DataFrame, path: Path) -> Path:
    """Items lost (baseline right, variant wrong) and gained per variant, accuracy tasks."""
    fig, ax = plt.subplots(figsize=(1.5 + 0.45 * len(flips), 3.6))
    xs = range(len(flips))
    ax.bar(xs, flips["lost"], color=PALETTE[1], label="lost (baseline right, variant wrong)")
    ax.bar(xs, -flips["gained"], color=PALETTE[2], label="gained (baseline wrong, variant right)")
    ax.axhline(0, color="#000000", linewidth=0.8)
    ax.set_xticks(list(xs), flips["variant"], rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("items (gained drawn below 0)")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    return _save(fig, path)
