"""The Markdown summary: the variant x task table and links to the plots."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

MAX_FLAGS = 12


def _fmt(value, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _size(num_bytes) -> str:
    if num_bytes is None or (isinstance(num_bytes, float) and math.isnan(num_bytes)):
        return "–"
    return f"{num_bytes / 2**20:.1f} MiB"


def render_base_precision(grid: dict | None) -> list[str]:
    if not grid or not grid.get("flagged"):
        return []
    bits, block = grid["grid_bits"], grid["block"]
    share = grid["share_at_most_2_to_b"].get(str(bits), grid["share_at_most_2_to_b"].get(bits, 0))
    return [
        f"> **Warning: the base model is already quantized.** {share:.0%} of its blocks of {block} weights "
        f"hold at most {2**bits} distinct values: its float weights are a dequantized {bits}-bit model. "
        f"Methods whose grids line up with it look unfairly good: {'; '.join(grid['aligned_methods'])}.",
        "",
    ]


def render_verdict(verdict) -> list[str]:
    if verdict is None:
        return []
    status = "PASSED" if verdict.passed else "FAILED"
    lines = [
        f"**Gate: {status}** — recommended variant: **{verdict.recommended_variant or 'none'}** "
        "(the most aggressive variant that passes every rule).",
        "",
        "| variant | bits/weight | verdict | failed checks | warnings |",
        "|---|---|---|---|---|",
    ]
    for v in sorted(verdict.variants, key=lambda v: -v.effective_bits):
        lines.append(
            f"| {v.variant} | {v.effective_bits:.3g} | {'pass' if v.passed else 'FAIL'} | {v.failures} | {v.warnings} |"
        )
    flagged = [f for f in verdict.findings if f.severity != "pass"]
    if flagged:
        lines += ["", "<details><summary>Flags (fail, then warn)</summary>", ""]
        rank = {v.variant: -v.effective_bits for v in verdict.variants}  # widest variant first
        ordered = sorted(
            flagged, key=lambda f: (rank.get(f.variant, 0), f.severity != "fail", f.task, f.slice)
        )
        lines += [f"- {f.message}" for f in ordered[:MAX_FLAGS]]
        if len(flagged) > MAX_FLAGS:
            lines.append(f"- … and {len(flagged) - MAX_FLAGS} more in gate.json")
        lines += ["", "</details>"]
    return lines + [""]


def render_slices(summary: pd.DataFrame) -> list[str]:
    """Per task, the metric of every variant on every slice (declared and automatic)."""
    sliced = summary[summary["slice"] != "all"]
    if sliced.empty:
        return []
    variants = list(dict.fromkeys(summary["variant"]))
    lines = ["## Results per slice", ""]
    for task, rows in sliced.groupby("task", sort=False):
        table = rows.pivot_table(index="slice", columns="variant", values="value", sort=False)
        counts = rows[rows["variant"] == "baseline"].set_index("slice")["n"]
        lines += [f"**{task}** ({rows['metric'].iloc[0]})", "",
                  "| slice | n | " + " | ".join(variants) + " |", "|---|---|" + "---|" * len(variants)]  # fmt: skip
        for slice_, values in table.iterrows():
            cells = " | ".join(_fmt(float(values.get(v, float("nan")))) for v in variants)
            lines.append(f"| {slice_} | {counts.get(slice_, '–')} | {cells} |")
        lines.append("")
    return lines


def render_knees(knees) -> list[str]:
    if knees is None or knees.empty:
        return []
    lines = ["## Knee per slice", "",
             "The bit width below which the loss per removed bit jumps (– : no knee, the curve stays flat).", "",
             "| method | task | slice | knee (bits) |", "|---|---|---|---|"]  # fmt: skip
    for row in knees.itertuples(index=False):
        knee = "–" if pd.isna(row.knee_bits) else str(int(row.knee_bits))
        lines.append(f"| {row.method} | {row.task} | {row.slice} | {knee} |")
    return lines + [""]


def render_markdown(
    summary: pd.DataFrame, manifest: dict, plots: dict[str, str], knees=None, verdict=None,
    diagnostics: str | None = None,
) -> str:  # fmt: skip
    model = manifest.get("model", {})
    suite = manifest.get("suite", {})
    lines = [
        f"# qharness report: {manifest.get('run_name', '')}",
        "",
        f"Model: {model.get('description', model.get('source', '?'))} (weights hash `{model.get('hash', '?')}`), "
        f"suite `{suite.get('name', '?')}` v{suite.get('version', '?')}, seed {manifest.get('seed', '?')}.",
        "Scored in float32; the baseline is shown at 16 bits. Variants marked *simulated* were "
        "evaluated as quantize→dequantize float weights; sizes are what packed weights would take.",
        "",
        *render_base_precision(manifest.get("base_precision")),
        *render_verdict(verdict),
        "## Results per task",
        "",
        "| variant | bits/weight | size | task | metric | n | value | Δ vs baseline | mean KLD | top-1 agree |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in summary[summary["slice"] == "all"].itertuples(index=False):
        delta = "" if row.variant == "baseline" else f"{row.delta:+.4g} ({row.rel_delta:+.1%})"
        lines.append(
            f"| {row.variant} | {_fmt(float(row.effective_bits), 3)} | {_size(row.model_bytes)} | {row.task} "
            f"| {row.metric} | {row.n} | {_fmt(float(row.value))} | {delta} "
            f"| {_fmt(float(row.kld), 3)} | {_fmt(float(row.top1_agree), 3)} |"
        )
    lines += ["", *render_slices(summary), *render_knees(knees), "## Quality versus bits", ""]
    lines += [f"![{name}]({path})" for name, path in plots.items()]
    if diagnostics:
        lines += ["", "Why it breaks — outliers, rounding error, collapse, error growth, sensitivity: "
                  f"[{diagnostics}]({diagnostics})"]  # fmt: skip
    return "\n".join(lines) + "\n"


def write_markdown(
    summary: pd.DataFrame,
    manifest: dict,
    path: Path,
    plots: dict[str, str],
    knees=None,
    verdict=None,
    diagnostics: str | None = None,
) -> Path:
    path.write_text(
        render_markdown(summary, manifest, plots, knees, verdict, diagnostics), encoding="utf-8"
    )
    return path
