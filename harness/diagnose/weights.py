"""Why a variant broke: weight outliers, rounding error, collapse of distinct values,
error growth through the layers, per-block sensitivity, and a check of whether the
"float" base model already lies on a low-bit grid.

Every function takes the model in its base state and leaves it there (quantized copies
of single layers, or a :class:`~harness.run.runner.MasterCopy` restore, never a reload).
"""

from __future__ import annotations

import math

import pandas as pd
import torch
from torch import nn

from harness.quant import quantize_, select_linears
from harness.quant.master import MasterCopy
from harness.records import QuantConfig

GRID_BLOCK = 32  # block length of the base-precision check (GGUF Q4_x/Q5_x/Q8_0 blocks)


# ---------------------------------------------------------------------------- weights
def _kurtosis(w: torch.Tensor) -> float:
    centred = w - w.mean()
    var = centred.pow(2).mean()
    return float(centred.pow(4).mean() / var.pow(2) - 3.0)


@torch.no_grad()
def weight_outliers(model: nn.Module, ignore: tuple[str, ...] = ("lm_head",)) -> pd.DataFrame:
    """Per Linear: excess kurtosis, max |w| / std, share of weights beyond 6 std, and the
    largest input channel's max |w| over the median channel's (activation-side outliers
    stretch whole columns). Sorted by ``max_over_std``, most outlier-heavy first."""
    rows = []
    for name, layer in select_linears(model, ignore):
        w = layer.weight.float()
        std = float(w.std())
        channel_max = w.abs().amax(dim=0)
        rows.append({
            "layer": name, "kurtosis": _kurtosis(w), "max_over_std": float(w.abs().max()) / std,
            "share_beyond_6std": float((w.abs() > 6 * std).float().mean()),
            "channel_max_ratio": float(channel_max.max() / channel_max.median()),
        })  # fmt: skip
    return pd.DataFrame(rows).sort_values("max_over_std", ascending=False, ignore_index=True)


def _distinct_per_block(w: torch.Tensor, block: int) -> torch.Tensor:
    """Number of distinct values in each block of ``block`` consecutive weights per row."""
    cols = w.shape[1] - w.shape[1] % block
    blocks = w[:, :cols].reshape(-1, block)
    ordered = blocks.sort(dim=1).values
    return (ordered[:, 1:] != ordered[:, :-1]).sum(dim=1) + 1


@torch.no_grad()
def base_precision(model: nn.Module, ignore: tuple[str, ...] = ("lm_head",), block: int = GRID_BLOCK,
                   share: float = 0.95) -> dict:  # fmt: skip
    """Does the "float" model already lie on a low-bit grid? For each bit width b, the
    share of blocks of ``block`` weights holding at most 2**b distinct values. The model
    is flagged at the smallest b for which at least ``share`` of all blocks do (a
    dequantized 4-bit GGUF: 16 values in every block of 32)."""
    counts = torch.cat(
        [
            _distinct_per_block(layer.weight.float(), block)
            for _, layer in select_linears(model, ignore)
        ]
    )
    shares = {b: float((counts <= 2**b).float().mean()) for b in range(1, int(math.log2(block)))}
    grid_bits = next((b for b, s in shares.items() if s >= share), None)
    aligned = []
    if grid_bits is not None:
        aligned = [f"gguf Q{grid_bits}_0/Q{grid_bits}_1 (blocks of {block})",
                   f"rtn/hqq at {grid_bits} bits with groups of {block} or a divisor of it",
                   f"any method at more than {grid_bits} bits"]  # fmt: skip
    return {"block": block, "share_at_most_2_to_b": shares, "grid_bits": grid_bits, "flagged": grid_bits is not None,
            "mean_distinct_per_block": float(counts.float().mean()), "aligned_methods": aligned}  # fmt: skip


def collapse_share(base: torch.Tensor, quantized: torch.Tensor, block: int = GRID_BLOCK,
                   base_counts: torch.Tensor | None = None) -> float:  # fmt: skip
    """Share of the distinct values in each block that quantization merged with another:
    ``1 - distinct(after) / distinct(before)``, averaged over blocks (``base_counts``:
    the base's distinct counts, when already known)."""
    before = (
        base_counts if base_counts is not None else _distinct_per_block(base.float(), block)
    ).float()
    after = _distinct_per_block(quantized.float(), block).float()
    return float((1 - after / before).mean())


# --------------------------------------------------------------------------- activations
def probe_batch(tokenizer, texts: list[str], max_tokens: int = 128) -> dict[str, torch.Tensor]:
    """Left-aligned probe inputs (each text cut to ``max_tokens``), with a mask."""
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"][:max_tokens] for t in texts]
    ids = [x for x in ids if x]
    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(input_ids)
    for i, x in enumerate(ids):
        input_ids[i, : len(x)] = torch.tensor(x)
        mask[i, : len(x)] = 1
    return {"input_ids": input_ids, "attention_mask": mask}


@torch.no_grad()
def hidden_states(model: nn.Module, batch: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """The residual stream after the embedding and after each block, padding dropped:
    a list of ``[tokens, hidden]`` tensors (index 0 = embeddings)."""
    out = model(**batch, output_hidden_states=True, use_cache=False)
    keep = batch["attention_mask"].bool()
    return [h[keep].float() for h in out.hidden_states]


def error_growth(base_states: list[torch.Tensor], states: list[torch.Tensor]) -> list[float]:
    """Relative error ``||h_v - h_b|| / ||h_b||`` of the hidden state after each layer."""
    return [
        float((v - b).norm() / b.norm()) for b, v in zip(base_states[1:], states[1:], strict=True)
    ]


def separability(final: torch.Tensor, mask_counts: list[int]) -> dict[str, float]:
    """How well outputs tell inputs apart: mean pairwise cosine similarity of the
    mean-pooled final hidden states, and their effective rank (exp of the entropy of
    the normalised singular values)."""
    pooled = torch.stack([chunk.mean(dim=0) for chunk in torch.split(final, mask_counts)])
    unit = nn.functional.normalize(pooled, dim=1)
    sims = unit @ unit.T
    n = len(pooled)
    mean_cos = float((sims.sum() - n) / (n * (n - 1))) if n > 1 else 1.0
    s = torch.linalg.svdvals(pooled - pooled.mean(dim=0))
    p = s / s.sum()
    rank = float(torch.exp(-(p * torch.log(p.clamp(min=1e-12))).sum()))
    return {"mean_pairwise_cosine": mean_cos, "effective_rank": rank}


@torch.no_grad()
def layer_inputs(
    model: nn.Module, batch: dict, layers: list[tuple[str, nn.Linear]], rows: int = 256
):
    """The first ``rows`` non-padding input rows seen by each layer on the probe batch,
    and the hidden states of the same forward pass (see :func:`hidden_states`)."""
    keep = batch["attention_mask"].bool()
    captured: dict[str, torch.Tensor] = {}

    def capture(name: str):
        def hook(_module, args) -> None:  # returning None leaves the input unchanged
            captured.setdefault(name, args[0][keep][:rows].float())

        return hook

    hooks = [layer.register_forward_pre_hook(capture(name)) for name, layer in layers]
    try:
        out = model(**batch, use_cache=False, output_hidden_states=True)
    finally:
        for hook in hooks:
            hook.remove()
    return captured, [h[keep].float() for h in out.hidden_states]


# ------------------------------------------------------------------- variant-level runs
@torch.no_grad()
def rounding_error(base: dict[str, torch.Tensor], model: nn.Module, inputs: dict[str, torch.Tensor],
                   ignore: tuple[str, ...] = ("lm_head",), base_counts: dict | None = None) -> pd.DataFrame:  # fmt: skip
    """Per layer of a quantized ``model`` against the ``base`` weights: relative Frobenius
    error, SQNR in dB, output error on the probe inputs, and collapse share."""
    rows = []
    for name, layer in select_linears(model, ignore):
        w, q = base[name].float(), layer.weight.float()
        err = float((w - q).norm() / w.norm())
        x = inputs.get(name)
        out_err = float((x @ (w - q).T).norm() / (x @ w.T).norm()) if x is not None else math.nan
        counts = base_counts.get(name) if base_counts else None
        rows.append({"layer": name, "rel_error": err, "sqnr_db": -20 * math.log10(max(err, 1e-12)),
                     "output_rel_error": out_err, "collapse_share": collapse_share(w, q, base_counts=counts)})  # fmt: skip
    return pd.DataFrame(rows)


@torch.no_grad()
def sensitivity(
    model: nn.Module, batch: dict, config: QuantConfig, master, blocks: list[str]
) -> pd.DataFrame:
    """Mean KLD (baseline || model) on the probe batch when only one block is quantized
    with ``config``; most sensitive first. ``blocks`` are module-name prefixes."""
    keep = batch["attention_mask"].bool()
    master.restore()
    base_logp = model(**batch, use_cache=False).logits[keep].float().log_softmax(-1)
    rows = []
    for block in blocks:
        master.restore()
        ignore = tuple(n for n, _ in select_linears(model, ()) if not n.startswith(block + "."))
        quantize_(model, _with_ignore(config, ignore + tuple(getattr(config, "ignore", ()))))
        logp = model(**batch, use_cache=False).logits[keep].float().log_softmax(-1)
        kld = float((base_logp.exp() * (base_logp - logp)).sum(-1).mean())
        rows.append({"block": block, "kld": kld})
    master.restore()
    return pd.DataFrame(rows).sort_values("kld", ascending=False, ignore_index=True)


def _with_ignore(config: QuantConfig, ignore: tuple[str, ...]) -> QuantConfig:
    from dataclasses import replace

    return replace(config, ignore=ignore)


def suggest_plan(sens: pd.DataFrame, keep: int, bits: int = 8) -> dict[str, int]:
    """Keep the ``keep`` most sensitive blocks at ``bits``: ``{"<block>.*": bits}``."""
    return {f"{block}.*": bits for block in sens["block"].head(keep)}


def block_prefixes(model: nn.Module) -> list[str]:
    """Names of the repeated decoder blocks (the parents of the quantizable Linears)."""
    names = [n for n, _ in select_linears(model, ("lm_head",))]
    prefixes = []
    for name in names:
        parts = name.split(".")
        digits = [i for i, p in enumerate(parts) if p.isdigit()]
        prefix = ".".join(parts[: digits[0] + 1]) if digits else name
        if prefix not in prefixes:
            prefixes.append(prefix)
    return prefixes


def diagnose(model: nn.Module, tokenizer, texts: list[str], configs: list[QuantConfig], *, keep: int = 3,
             probe_tokens: int = 128, sensitivity_tokens: int = 48, progress=None) -> dict:  # fmt: skip
    """Run every diagnostic on the base ``model`` and the variants in ``configs``.

    Returns tables (DataFrames) and records; the model is left in its base state.
    """
    step = progress or (lambda message: None)
    master = MasterCopy(model)
    device = next(model.parameters()).device
    batch = {k: v.to(device) for k, v in probe_batch(tokenizer, texts, probe_tokens).items()}
    counts = batch["attention_mask"].sum(dim=1).tolist()
    layers = select_linears(model, ("lm_head",))
    step("outliers and base precision")
    result = {"outliers": weight_outliers(model), "base_precision": base_precision(model)}
    base_weights = {name: layer.weight.detach().clone() for name, layer in layers}
    base_counts = {
        name: _distinct_per_block(w.float(), GRID_BLOCK) for name, w in base_weights.items()
    }
    inputs, base_states = layer_inputs(model, batch, layers)
    separation = [{"variant": "baseline", **separability(base_states[-1], counts)}]
    rounding, growth = [], []
    for config in configs:
        step(f"{config.variant_name}: rounding error, collapse, error growth")
        master.restore()
        quantize_(model, config)
        table = rounding_error(base_weights, model, inputs, base_counts=base_counts)
        rounding.append(table.assign(variant=config.variant_name, bits=config.bits))
        states = hidden_states(model, batch)
        errors = error_growth(base_states, states)
        growth += [{"variant": config.variant_name, "bits": config.bits, "layer": i + 1, "rel_error": e}
                   for i, e in enumerate(errors)]  # fmt: skip
        separation.append({"variant": config.variant_name, **separability(states[-1], counts),
                           "weight_collapse_share": float(table["collapse_share"].mean())})  # fmt: skip
    master.restore()
    lowest = min(configs, key=lambda c: c.bits)
    step(f"sensitivity: one block at a time at {lowest.bits} bits")
    short = {k: v[:, :sensitivity_tokens] for k, v in batch.items()}  # one forward per block
    sens = sensitivity(model, short, lowest, master, block_prefixes(model))
    result.update(
        rounding=pd.concat(rounding, ignore_index=True), growth=pd.DataFrame(growth),
        separation=pd.DataFrame(separation), sensitivity=sens,
        plan={"bits": 8, "keep": keep, "layer_bits": suggest_plan(sens, keep), "measured_at_bits": lowest.bits},
        probes={"texts": len(counts), "tokens": int(sum(counts)),
                "sensitivity_tokens": int(short["attention_mask"].sum())},  # fmt: skip
    )  # fmt: skip
    return result
