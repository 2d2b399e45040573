"""The Markdown summary: the variant x task table and links to the plots."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd


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


def render_markdown(summary: pd.DataFrame, manifest: dict, plots: dict[str, str]) -> str:
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
        "| variant | bits/weight | size | task | metric | n | value | Δ vs baseline | mean KLD | top-1 agree |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in summary.itertuples(index=False):
        delta = "" if row.variant == "baseline" else f"{row.delta:+.4g} ({row.rel_delta:+.1%})"
        lines.append(
            f"| {row.variant} | {_fmt(float(row.effective_bits), 3)} | {_size(row.model_bytes)} | {row.task} "
            f"| {row.metric} | {row.n} | {_fmt(float(row.value))} | {delta} "
            f"| {_fmt(float(row.kld), 3)} | {_fmt(float(row.top1_agree), 3)} |"
        )
    lines += ["", "## Quality versus bits", ""]
    lines += [f"![{name}]({path})" for name, path in plots.items()]
    return "\n".join(lines) + "\n"


def write_markdown(
    summary: pd.DataFrame, manifest: dict, path: Path, plots: dict[str, str]
) -> Path:
    path.write_text(render_markdown(summary, manifest, plots), encoding="utf-8")
    return path
