"""Tables the reports show, derived from stored results only (no rendering here).

"Quality kept" puts tasks with different metrics on one scale: ``1 - loss``, where the
loss is the relative accuracy drop or the relative perplexity increase (see
:class:`~harness.records.Comparison`), clipped at 0; 100% means as good as the baseline.
"""

from __future__ import annotations

import math

import pandas as pd

from harness.analysis.stats import families
from harness.manifest import Manifest

MAX_EXAMPLES = 4  # broken items shown per flagged variant x task
BUILTIN_SLICES = ("general", "arithmetic", "rare", "long_context")


def kept(frame: pd.DataFrame) -> pd.Series:
    """Quality kept per comparison row, clipped to [0, 1.5]."""
    return (1 - frame["loss"].astype(float)).clip(0, 1.5)


def variant_table(
    summary: pd.DataFrame, comparisons: pd.DataFrame, manifest: Manifest, verdict
) -> pd.DataFrame:
    """One row per variant, widest first: size, verdict, quality kept over all tasks, the
    first perplexity task's value, and mean KLD / top-1 agreement over all items."""
    variants = manifest.variants
    judged = {v.variant: v for v in verdict.variants} if verdict is not None else {}
    overall = summary[summary["slice"] == "all"]
    ppl_task = next(iter(overall.loc[overall["metric"] == "perplexity", "task"]), None)
    rows = []
    for name in dict.fromkeys(overall["variant"]):
        info = variants[name]
        mine = overall[overall["variant"] == name]
        comp = comparisons[(comparisons["variant"] == name) & (comparisons["slice"] == "all")] \
            if not comparisons.empty else comparisons  # fmt: skip
        judgement = judged.get(name)
        rows.append({
            "variant": name,
            "method": info.method,
            "bits": info.bits,
            "effective_bits": info.effective_bits,
            "model_bytes": info.model_bytes,
            "simulated": info.simulated,
            "verdict": "baseline" if name == "baseline" else
                       ("pass" if judgement and judgement.passed else "FAIL" if judgement else "–"),
            "failures": judgement.failures if judgement else 0,
            "warnings": judgement.warnings if judgement else 0,
            "kept": float(kept(comp).mean()) if len(comp) else 1.0,
            "ppl": float(mine.loc[mine["task"] == ppl_task, "value"].iloc[0]) if ppl_task else math.nan,
            "kld": _weighted(mine, "kld"),
            "top1": _weighted(mine, "top1_agree"),
            "quantize_s": info.seconds,
            "eval_s": _eval_seconds(manifest, name),
            "note": info.note,
        })  # fmt: skip
    table = pd.DataFrame(rows)
    return table.sort_values("effective_bits", ascending=False, kind="stable").reset_index(
        drop=True
    )


def _weighted(rows: pd.DataFrame, column: str) -> float:
    values = rows[column].astype(float)
    ok = values.notna()
    if not ok.any():
        return math.nan
    weights = rows.loc[ok, "n"].astype(float)
    return float((values[ok] * weights).sum() / weights.sum())


def _eval_seconds(manifest: Manifest, variant: str) -> float | None:
    times = [t for key, t in manifest.timings.items() if key.startswith(f"{variant}/")]
    return round(sum(times), 1) if times else None


def method_by_bits(table: pd.DataFrame, manifest: Manifest, column: str = "kept") -> pd.DataFrame:
    """Method (curve) x bits grid of ``column``; bits from 16 down."""
    family = families(manifest.variants)
    rows = table[table["variant"] != "baseline"].assign(family=lambda t: t["variant"].map(family))
    if rows.empty:
        return pd.DataFrame()
    grid = rows.pivot_table(
        index="family", columns="bits", values=column, aggfunc="first", sort=False
    )
    return grid[sorted(grid.columns, reverse=True)]


def slice_kept(comparisons: pd.DataFrame) -> pd.DataFrame:
    """Quality kept per variant x slice: the mean over the slice's tasks, with the mean of
    their interval edges (an approximate band: tasks' intervals are not combined exactly)."""
    if comparisons.empty:
        return pd.DataFrame(columns=["variant", "slice", "kept", "low", "high", "tasks"])
    frame = comparisons.assign(
        kept=kept(comparisons),
        low=(1 - comparisons["loss_ci"].map(lambda ci: ci[1])).clip(0, 1.5),
        high=(1 - comparisons["loss_ci"].map(lambda ci: ci[0])).clip(0, 1.5),
    )
    out = frame.groupby(["variant", "slice"], sort=False).agg(
        kept=("kept", "mean"), low=("low", "mean"), high=("high", "mean"), tasks=("task", "nunique")
    )
    return out.reset_index()


def slice_order(slices) -> list[str]:
    """Built-in slices first, then the user's, then automatic ones (context buckets, fragile)."""
    slices = list(dict.fromkeys(slices))
    auto = [s for s in slices if s.startswith("ctx") or s == "fragile"]
    builtin = [s for s in BUILTIN_SLICES if s in slices]
    rest = [s for s in slices if s not in auto and s not in builtin and s != "all"]
    return ["all", *builtin, *rest, *auto] if "all" in slices else [*builtin, *rest, *auto]


def worst_severity(findings, variant: str, slice_: str) -> str:
    levels = [f.severity for f in findings if f.variant == variant and f.slice == slice_]
    return "fail" if "fail" in levels else "warn" if "warn" in levels else ""


def broken_examples(
    items: pd.DataFrame, findings, variants: dict, per_method: int = 2
) -> list[dict]:
    """Items the baseline got right and a failed variant got wrong, with both outputs: for
    the ``per_method`` widest failed variants of each method, every task that failed."""
    family = families(variants)
    failed = sorted({f.variant for f in findings if f.severity == "fail"},
                    key=lambda v: -variants[v].bits)  # fmt: skip
    chosen, count = [], {}
    for variant in failed:
        count[family.get(variant)] = count.get(family.get(variant), 0) + 1
        if count[family.get(variant)] <= per_method:
            chosen.append(variant)
    base = items[items["variant"] == "baseline"].set_index(["task", "item_id"])
    examples = []
    for variant in chosen:
        tasks = dict.fromkeys(
            f.task for f in findings if f.severity == "fail" and f.variant == variant
        )
        for task in tasks:
            wrong = items[(items["variant"] == variant) & (items["task"] == task)
                          & (items["correct"] == False)]  # noqa: E712  # fmt: skip
            shown = 0
            for row in wrong.itertuples(index=False):
                key = (task, row.item_id)
                if key not in base.index or base.loc[key, "correct"] != True:  # noqa: E712
                    continue
                examples.append({"variant": variant, "task": task, "item_id": row.item_id,
                                 "target": row.target, "baseline": base.loc[key, "prediction"],
                                 "output": row.prediction})  # fmt: skip
                shown += 1
                if shown == MAX_EXAMPLES:
                    break
    return examples


def adaptive_note(manifest: Manifest) -> str | None:
    """How many items adaptive stopping saved, when it was on."""
    records = manifest.adaptive
    if not records:
        return None
    counted = [r for r in records.values() if r["of"] is not None]  # lm-eval tasks: unknown
    done = sum(r["evaluated"] for r in counted)
    total = sum(r["of"] for r in counted)
    stopped = len(manifest.adaptive_failures)
    return (f"Adaptive stopping: {done} of {total} variant items evaluated ({total - done} saved, "
            f"{(total - done) / max(total, 1):.0%}); {stopped} variant(s) stopped on every slice "
            "once a failure was settled (their figures cover the items evaluated).")  # fmt: skip
