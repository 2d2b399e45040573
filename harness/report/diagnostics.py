"""Diagnostics output: CSV tables, plots and a Markdown section."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from harness.report.plots import PALETTE  # noqa: E402


def plot_error_growth(growth: pd.DataFrame, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for colour, (variant, rows) in zip(
        PALETTE, growth.groupby("variant", sort=False), strict=False
    ):
        ax.plot(rows["layer"], rows["rel_error"], marker=".", color=colour, label=variant)
    ax.set_yscale("log")
    ax.set_xlabel("layer (depth)")
    ax.set_ylabel("relative error of the hidden state")
    ax.set_title("Error growth through the layers, variant vs baseline")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)
    return path


def plot_sensitivity(sens: pd.DataFrame, bits: int, path: Path) -> Path:
    ordered = sens.sort_values("block", key=lambda s: s.map(_block_index))
    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    ax.bar(range(len(ordered)), ordered["kld"], color=PALETTE[0])
    ax.set_xticks(range(len(ordered)), [str(_block_index(b)) for b in ordered["block"]], fontsize=7)
    ax.set_xlabel("block (only this one quantized)")
    ax.set_ylabel("mean KLD vs baseline (nats)")
    ax.set_title(f"Sensitivity per block at {bits} bits")
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)
    return path


def _block_index(name: str) -> int:
    digits = [p for p in name.split(".") if p.isdigit()]
    return int(digits[-1]) if digits else -1


def render_section(result: dict) -> str:
    bp = result["base_precision"]
    lines = ["# Diagnostics", ""]
    if bp["flagged"]:
        lines += [f"> **Warning: the base model's float weights already lie on a {bp['grid_bits']}-bit grid** "
                  f"({bp['share_at_most_2_to_b'][bp['grid_bits']]:.0%} of blocks of {bp['block']} hold at most "
                  f"{2 ** bp['grid_bits']} distinct values): it is a dequantized low-bit model. Grids that line up "
                  f"with it look unfairly good: {'; '.join(bp['aligned_methods'])}.", ""]  # fmt: skip
    top = result["outliers"].head(5)
    lines += [
        "## Outlier-heavy layers",
        "",
        "| layer | max/std | kurtosis | beyond 6σ | channel max ratio |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {r.layer} | {r.max_over_std:.1f} | {r.kurtosis:.1f} | {r.share_beyond_6std:.2e} | {r.channel_max_ratio:.1f} |"
              for r in top.itertuples()]  # fmt: skip
    rounding = (
        result["rounding"]
        .groupby("variant", sort=False)
        .agg(
            sqnr_db=("sqnr_db", "mean"),
            output_rel_error=("output_rel_error", "mean"),
            collapse=("collapse_share", "mean"),
        )
    )
    sep = result["separation"].set_index("variant")
    growth = result["growth"]
    lines += ["", "## Per variant", "",
              "| variant | mean SQNR (dB) | layer output error | collapsed values | final-layer error | mean pairwise cosine | effective rank |",
              "|---|---|---|---|---|---|---|",
              f"| baseline | – | – | – | – | {sep.loc['baseline', 'mean_pairwise_cosine']:.3f} | {sep.loc['baseline', 'effective_rank']:.2f} |"]  # fmt: skip
    for variant, r in rounding.iterrows():
        last = growth[growth["variant"] == variant]["rel_error"].iloc[-1]
        lines.append(f"| {variant} | {r.sqnr_db:.1f} | {r.output_rel_error:.3f} | {r.collapse:.1%} | {last:.3f} "
                     f"| {sep.loc[variant, 'mean_pairwise_cosine']:.3f} | {sep.loc[variant, 'effective_rank']:.2f} |")  # fmt: skip
    plan = result["plan"]
    lines += ["", f"## Sensitivity and a mixed-precision plan (measured at {plan['measured_at_bits']} bits)", "",
              "Most sensitive blocks (only that block quantized; mean KLD vs baseline on the probes):", ""]  # fmt: skip
    lines += [
        f"- `{r.block}`: {r.kld:.3f}"
        for r in result["sensitivity"].head(plan["keep"] + 2).itertuples()
    ]
    lines += ["", f"Suggested plan: keep {', '.join(f'`{p}`' for p in plan['layer_bits'])} at {plan['bits']} bits "
              "(`plan.json`; run it with `qharness run --layer-bits plan.json`).", "",
              "![error growth](error_growth.png)", "", "![sensitivity](sensitivity.png)", ""]  # fmt: skip
    return "\n".join(lines)


def write_diagnostics(result: dict, out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for key in ("outliers", "rounding", "growth", "separation", "sensitivity"):
        paths[key] = out / f"{key}.csv"
        result[key].to_csv(paths[key], index=False, float_format="%.6g")
    paths["base_precision"] = out / "base_precision.json"
    paths["base_precision"].write_text(json.dumps(result["base_precision"], indent=2) + "\n")
    paths["plan"] = out / "plan.json"
    paths["plan"].write_text(json.dumps(result["plan"]["layer_bits"], indent=2) + "\n")
    paths["growth_plot"] = plot_error_growth(result["growth"], out / "error_growth.png")
    paths["sensitivity_plot"] = plot_sensitivity(
        result["sensitivity"], result["plan"]["measured_at_bits"], out / "sensitivity.png"
    )
    paths["report"] = out / "diagnostics.md"
    paths["report"].write_text(render_section(result), encoding="utf-8")
    return paths
