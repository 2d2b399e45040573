"""Synthetic per-item tables with known effects, for the statistics and gate tests."""

from __future__ import annotations

import numpy as np
import pandas as pd

SLICES = ("general", "arithmetic", "rare")
METRICS = {f"mc_{s}": "acc" for s in SLICES} | {"text": "perplexity"}


def make_items(
    seed: int, variants: dict[str, dict], n: int = 120, base_acc: float = 0.75
) -> pd.DataFrame:
    """A baseline and variants on one multiple-choice task per slice plus a perplexity task.

    Each variant is a dict of effects: ``noise`` (each item flips right<->wrong with this
    probability), ``drop`` ({slice: extra probability that a right item turns wrong}),
    ``ppl_shift`` (added NLL per token), ``kld`` (mean KLD), ``top1`` (agreement).
    """
    rng = np.random.default_rng(seed)
    rows = []
    base_correct = {s: rng.random(n) < base_acc for s in SLICES}
    tokens = rng.integers(50, 150, size=n)
    base_nll = tokens * (3.0 + 0.3 * rng.standard_normal(n))

    def row(variant, task, i, slices, correct, nll, n_tokens, kld, top1):
        return {"variant": variant, "task": task, "item_id": str(i), "slices": list(slices), "correct": correct,
                "correct_norm": correct, "score": float(correct) if correct is not None else nll / n_tokens,
                "nll": float(nll), "gold_logprob": -float(nll), "n_tokens": int(n_tokens), "kld": kld,
                "top1_agree": top1, "margin": None, "prediction": "", "target": ""}  # fmt: skip

    for s in SLICES:
        for i in range(n):
            rows.append(
                row("baseline", f"mc_{s}", i, [s], bool(base_correct[s][i]), 1.0, 1, None, None)
            )
    for i in range(n):
        rows.append(
            row("baseline", "text", i, ["general"], None, base_nll[i], tokens[i], None, None)
        )
    for name, fx in variants.items():
        for s in SLICES:
            correct = base_correct[s].copy()
            flip = rng.random(n) < fx.get("noise", 0.0)
            correct = np.where(flip, ~correct, correct)
            lose = rng.random(n) < fx.get("drop", {}).get(s, 0.0)
            correct = correct & ~lose
            for i in range(n):
                kld = float(rng.gamma(2.0, fx.get("kld", 0.01) / 2))
                top1 = float(np.clip(fx.get("top1", 0.97) + 0.02 * rng.standard_normal(), 0, 1))
                rows.append(row(name, f"mc_{s}", i, [s], bool(correct[i]), 1.0, 1, kld, top1))
        nll = base_nll + tokens * (fx.get("ppl_shift", 0.0) + 0.01 * rng.standard_normal(n))
        for i in range(n):
            kld = float(rng.gamma(2.0, fx.get("kld", 0.01) / 2))
            rows.append(
                row(
                    name, "text", i, ["general"], None, nll[i], tokens[i], kld, fx.get("top1", 0.97)
                )
            )
    return pd.DataFrame(rows)


def manifest(variants: dict[str, tuple[int, float, int]]) -> dict:
    """``variants``: name -> (bits, effective bits, model bytes)."""
    return {
        "model": {"source": "synthetic", "dtype": "float32"},
        "suite": {
            "tasks": [
                {
                    "name": t,
                    "metric": m,
                    "kind": "perplexity" if m == "perplexity" else "multiple_choice",
                }
                for t, m in METRICS.items()
            ]
        },  # fmt: skip
        "variants": {
            "baseline": {"method": "none", "bits": 16, "effective_bits": 16.0, "model_bytes": 1000}
        }
        | {
            v: {"method": "rtn", "bits": b, "effective_bits": e, "model_bytes": size}
            for v, (b, e, size) in variants.items()
        },
    }


def records(variants: dict[str, tuple[int, float, int]]):
    """The typed variant records of :func:`manifest`."""
    from harness.manifest import parse

    return parse(manifest(variants)).variants


def store_run(root, items: pd.DataFrame, manifest_fields: dict):
    """A stored run (no model) holding ``items`` and the given manifest fields."""
    from harness.records import ItemResult
    from harness.store import RunStore

    store = RunStore.open(root, {"model": "synthetic"})
    store.update_manifest(**manifest_fields)
    for (variant, task), rows in items.groupby(["variant", "task"], sort=False):
        store.append(variant, task,
                     [ItemResult(**{**r, "slices": tuple(r["slices"])}) for r in rows.to_dict("records")])  # fmt: skip
    return store


SIZES = {"w8": (8, 8.25, 500), "w4": (4, 4.25, 300), "w3": (3, 3.25, 250), "w2": (2, 2.25, 200)}
EFFECTS = {f"w{b}": fx for b, fx in [(8, {"noise": 0.01}), (4, {"drop": {"arithmetic": 0.3}}),
                                     (3, {"drop": {"arithmetic": 0.6}, "ppl_shift": 0.2}),
                                     (2, {"drop": {"general": 0.9, "arithmetic": 0.9, "rare": 0.9}, "ppl_shift": 2})]}  # fmt: skip


def gate(items, variants, policy=None, require=None):
    """The gate's verdict on synthetic ``items`` (variants sized by :data:`SIZES`)."""
    from harness.analysis.gate import apply_policy, verdict
    from harness.analysis.policy import Policy, default_rules
    from harness.analysis.stats import compare

    policy = policy or Policy(default_rules())
    comparisons = compare(items, METRICS, alpha=policy.alpha)
    findings = apply_policy(policy, comparisons)
    return verdict(findings, records({v: SIZES[v] for v in variants}), require)
