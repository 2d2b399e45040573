"""Two stored runs side by side (two models, two methods, before and after a change),
paired item by item on the items both evaluated. Needs no model."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from harness.analysis.stats import compare, comparisons_frame
from harness.errors import InputError
from harness.metrics import get_metric
from harness.report.markdown import fmt
from harness.store import RunStore


def _pairs(a: pd.DataFrame, b: pd.DataFrame, requested: list[str] | None) -> list[tuple[str, str]]:
    names_a, names_b = list(dict.fromkeys(a["variant"])), list(dict.fromkeys(b["variant"]))
    if not requested:
        shared = [v for v in names_a if v in set(names_b)]
        if not shared:
            raise InputError(f"the runs share no variant name (A: {', '.join(names_a)}; B: {', '.join(names_b)}); "
                             "pair them with --pair A_VARIANT:B_VARIANT")  # fmt: skip
        return [(v, v) for v in shared]
    pairs = []
    for text in requested:
        left, sep, right = text.partition(":")
        if not sep:
            left = right = text
        for name, names, run in ((left, names_a, "A"), (right, names_b, "B")):
            if name not in names:
                raise InputError(
                    f"--pair {text}: run {run} has no variant {name!r} ({', '.join(names)})"
                )
        pairs.append((left, right))
    return pairs


def compare_runs(run_a: Path, run_b: Path, pairs: list[str] | None = None, *,
                 alpha: float = 0.05) -> tuple[pd.DataFrame, list[str]]:  # fmt: skip
    """One comparison row per pair x task x slice (B against A, on shared items), and notes
    on what could not be compared."""
    stores = [RunStore(run_a), RunStore(run_b)]
    manifests = [s.manifest() for s in stores]
    items = [s.load_items() for s in stores]
    metrics = [m.metrics for m in manifests]
    frames, notes = [], []
    for left, right in _pairs(items[0], items[1], pairs):
        a = items[0][items[0]["variant"] == left]
        b = items[1][items[1]["variant"] == right]
        shared = a.merge(b[["task", "item_id"]], on=["task", "item_id"])[["task", "item_id"]]
        if shared.empty:
            notes.append(f"{left} vs {right}: no shared items")
            continue
        a = a.merge(shared, on=["task", "item_id"])
        b = b.merge(shared, on=["task", "item_id"])
        for task in list(dict.fromkeys(shared["task"])):
            if metrics[0].get(task) != metrics[1].get(task):
                notes.append(
                    f"{task}: metric {metrics[0].get(task)} in A but {metrics[1].get(task)} in B; skipped"
                )
                a, b = a[a["task"] != task], b[b["task"] != task]
            elif get_metric(metrics[0][task]).perplexity:
                tokens = a[a["task"] == task].set_index("item_id")["n_tokens"]
                if not tokens.equals(
                    b[b["task"] == task].set_index("item_id")["n_tokens"].reindex(tokens.index)
                ):
                    notes.append(
                        f"{task}: the runs tokenize differently, so per-token perplexity is not comparable; skipped"
                    )
                    a, b = a[a["task"] != task], b[b["task"] != task]
        # B plays the variant, A the baseline; B's KLD was against its own baseline: drop it
        paired = pd.concat(
            [
                a.assign(variant="baseline"),
                b.assign(variant="B", kld=None, top1_agree=None, kld_tokens=None, dp_tokens=None),
            ]  # fmt: skip
        )
        result = compare(paired, metrics[0], alpha=alpha)
        frame = comparisons_frame(result, split_intervals=True)
        if not frame.empty:
            frames.append(frame.assign(variant_a=left, variant_b=right).drop(columns=["variant"]))
    if not frames:
        raise InputError("nothing to compare: " + "; ".join(notes))
    table = pd.concat(frames, ignore_index=True)
    columns = [
        "variant_a",
        "variant_b",
        *[c for c in table.columns if c not in ("variant_a", "variant_b")],
    ]
    table = table[columns].drop(columns=[c for c in table.columns if c.startswith(("kld", "top1"))])
    return table, notes


def render_comparison(table: pd.DataFrame, notes: list[str], run_a: Path, run_b: Path) -> str:
    lines = [f"# qharness compare: {run_a.name} (A) vs {run_b.name} (B)", "",
             "B against A on the items both runs evaluated (slice `all`); Δ = B − A with its paired 95% "
             "interval; lost = items A got right and B got wrong.", "",
             "| A | B | task | metric | n | A | B | Δ [95% CI] | lost/gained | q |",
             "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in table[table["slice"] == "all"].itertuples(index=False):
        flips = "–" if pd.isna(r.lost) else f"{int(r.lost)}/{int(r.gained)}"
        lines.append(f"| {r.variant_a} | {r.variant_b} | {r.task} | {r.metric} | {r.n} | {fmt(r.base_value)} "
                     f"| {fmt(r.value)} | {r.delta:+.3g} [{r.delta_ci_low:+.3g}, {r.delta_ci_high:+.3g}] "
                     f"| {flips} | {fmt(r.q_value, 2)} |")  # fmt: skip
    if notes:
        lines += ["", *[f"- {n}" for n in notes]]
    return "\n".join(lines) + "\n"


def write_comparison(
    run_a: Path, run_b: Path, out: Path, pairs: list[str] | None = None
) -> dict[str, Path]:
    """Compare, then write ``compare.csv`` and ``compare.md`` into ``out``."""
    table, notes = compare_runs(run_a, run_b, pairs)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out / "compare.csv", "markdown": out / "compare.md"}
    table.to_csv(paths["csv"], index=False, float_format="%.6g")
    paths["markdown"].write_text(render_comparison(table, notes, run_a, run_b), encoding="utf-8")
    return paths
