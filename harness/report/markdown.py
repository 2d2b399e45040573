"""The Markdown summary (under 60 lines, for a pull-request comment): verdict, the
recommended variant, one table of variants, the method x bits grid, links to the plots
and to the full HTML report."""

from __future__ import annotations

import html
import math
import re
from pathlib import Path

import pandas as pd

from harness.manifest import GridCheck, Manifest
from harness.report.findings import measure, observed, required
from harness.report.views import adaptive_note
from harness.text import visible


def escape_md(text: object) -> str:
    """Text from a suite, an item or a model as inert Markdown on one line: HTML escaped
    (renderers pass raw HTML through), Markdown punctuation and control characters too."""
    text = html.escape(visible(text).replace("\n", " "), quote=False)
    return re.sub(r"([\\`*_\[\]|#!{}~])", r"\\\1", text)


def fmt(value, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def size(num_bytes) -> str:
    if num_bytes is None or (isinstance(num_bytes, float) and math.isnan(num_bytes)):
        return "–"
    return f"{num_bytes / 2**20:.1f} MiB"


def percent(value) -> str:
    return "–" if value is None or math.isnan(value) else f"{100 * value:.0f}%"


def base_precision_warning(grid: GridCheck | None) -> str | None:
    if grid is None or not grid.flagged:
        return None
    bits, block = grid.grid_bits, grid.block
    return (f"**Warning: the base model is already quantized.** {grid.share:.0%} of its blocks of {block} "
            f"weights hold at most {2**bits} distinct values (a dequantized {bits}-bit model); methods "
            f"whose grids line up with it look unfairly good: {'; '.join(grid.aligned_methods)}.")  # fmt: skip


def verdict_line(verdict) -> str:
    if verdict is None:
        return "Gate not applied (run `qharness gate RUN`)."
    status = "PASSED" if verdict.passed else "FAILED"
    target = f" (target: {escape_md(verdict.target)})" if verdict.target else ""
    mode = "safety shown" if verdict.mode == "safety" else "no harm shown"
    return (f"**Gate: {status}** ({verdict.mode} mode: passes where {mode}){target} — recommended variant: **{escape_md(verdict.recommended_variant or 'none')}**, "
            "the most aggressive variant that passes every rule.")  # fmt: skip


def what_broke_lines(top, rest: list[str]) -> list[str]:
    """The ranked findings as a table, then one line per slice for the rest."""
    if not top:
        return []
    lines = ["**What broke**, worst first:", "",
             "| # | | variant | task / slice | measure | observed [interval] | required | examples (baseline → variant) |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for i, r in enumerate(top, start=1):
        f = r.finding
        blind = (
            " — slice too small to resolve it"
            if r.resolves is False and f.severity == "warn"
            else ""
        )
        lines.append(f"| {i} | {f.severity.upper()} | {escape_md(f.variant)} | {escape_md(f.task)} / {escape_md(f.slice)} "
                     f"| {escape_md(measure(f))} | {observed(f)}{blind} | {required(f)} "
                     f"| {'; '.join(map(escape_md, r.examples)) or '–'} |")  # fmt: skip
    lines.append("")
    lines += [f"- {escape_md(line)}" for line in rest]
    return lines + ([""] if rest else [])


def render_markdown(table: pd.DataFrame, grid: pd.DataFrame, manifest: Manifest, verdict,
                    links: dict[str, str], slice_knees: pd.DataFrame | None = None,
                    top=(), rest: list[str] = ()) -> str:  # fmt: skip
    model, suite = manifest.model, manifest.suite
    lines = [
        f"# qharness report: {escape_md(manifest.run_name)}",
        "",
        f"Model {escape_md(model.name)} (weights `{model.hash or '?'}`), "
        f"suite {escape_md(suite.name)} v{escape_md(suite.version)}, seed {manifest.seed}; "
        f"scored in {model.dtype}, baseline shown at 16 bits.",
        "",
    ]
    warning = base_precision_warning(manifest.base_precision)
    lines += [f"> {warning}", ""] if warning else []
    lines += [verdict_line(verdict), ""]
    lines += what_broke_lines(list(top), list(rest))
    has_ppl = table["ppl"].notna().any()
    lines += [
        "| variant | bits/w | size | verdict | fail/warn | quality kept | " + ("ppl | " if has_ppl else "") + "KLD | top-1 |",
        "|---|---|---|---|---|---|" + ("---|" if has_ppl else "") + "---|---|",
    ]  # fmt: skip
    for r in table.itertuples(index=False):
        sim = "*" if r.simulated else ""
        ppl = f"{fmt(r.ppl)} | " if has_ppl else ""
        lines.append(f"| {escape_md(r.variant)}{sim} | {r.effective_bits:.3g} | {size(r.model_bytes)} | {r.verdict} "
                     f"| {r.failures}/{r.warnings} | {percent(r.kept)} | {ppl}{fmt(r.kld, 3)} | {fmt(r.top1, 3)} |")  # fmt: skip
    lines += ["", "Quality kept: 100% minus the relative accuracy drop or perplexity increase, averaged "
              "over tasks. \\* evaluated as simulated quantize→dequantize weights; sizes count packed codes.",
              ""]  # fmt: skip
    skipped = manifest.skipped_variants
    if skipped:
        lines += [f"Skipped: {'; '.join(map(escape_md, skipped))}.", ""]
    truncated = manifest.truncated
    if truncated:
        counts = ", ".join(f"{escape_md(task)}: {n}" for task, n in truncated.items())
        lines += [
            f"Left-truncated to the model's context (oldest tokens dropped): {counts} item(s).",
            "",
        ]
    adaptive = adaptive_note(manifest)
    if adaptive:
        lines += [adaptive, ""]
    if not grid.empty and len(grid.index) > 1:
        lines += ["**Methods × bits** (quality kept)", "",
                  "| method | " + " | ".join(map(str, grid.columns)) + " |",
                  "|---|" + "---|" * len(grid.columns)]  # fmt: skip
        for method, values in grid.iterrows():
            lines.append(
                f"| {escape_md(method)} | " + " | ".join(percent(v) for v in values) + " |"
            )
        lines.append("")
    if slice_knees is not None and not slice_knees.empty:
        knees = slice_knees.dropna(subset=["knee_bits"])
        by_method = [f"{escape_md(m)}: " + ", ".join(f"{escape_md(s)} {int(k)}" for s, k in zip(rows["slice"], rows["knee_bits"], strict=True))
                     for m, rows in knees.groupby("method", sort=False)]  # fmt: skip
        if by_method:
            lines += ["Knee (bits) per slice — " + "; ".join(by_method) + ".", ""]
    lines.append(" · ".join(f"[{name}]({path})" for name, path in links.items()))
    return "\n".join(lines) + "\n"


def write_markdown(path: Path, *args, **kwargs) -> Path:
    path.write_text(render_markdown(*args, **kwargs), encoding="utf-8")
    return path
