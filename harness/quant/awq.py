"""AWQ (Lin et al., 2023): activation-aware weight quantization.

Weight channels that meet large activations matter most. For every set of Linear layers
reading the same input (q/k/v, gate/up, or one layer alone), a per-input-channel scale
``s = mean|x|^α`` (normalised so max·min = 1) is found by grid search over α ∈ [0, 1) on
calibration activations, minimising the output error of the smallest module holding the
set (the attention block for q/k/v, the MLP for gate/up). The weights are quantized as
``Q(W·diag(s))·diag(s)⁻¹``: the scale is applied before rounding and undone after, so
no architecture-specific fusing into the previous layer is needed to evaluate it (the
fused model computes the same function). Then each group's clipping range is searched
on the scaled inputs (except for q/k, whose outputs feed attention scores, as in the
reference). α = 0 is plain round-to-nearest, so the search never does worse than RTN on
its calibration objective (with the paper's scales; AutoAWQ's ``duo_scaling`` also divides
by the weights' magnitude). Blocks see the float outputs of the blocks before them, as in
the reference implementation (llm-awq). Evaluated as simulated quantize→dequantize
float weights on the RTN grid (integer zero-point when asymmetric); deployed, the
per-channel scale folds into the previous layer, so it costs no storage.
"""

from __future__ import annotations

import fnmatch
import sys
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn
from tqdm import tqdm

from harness.errors import InputError
from harness.quant import (
    check_bits,
    register_method,
    select_linears,
    unquantized_bytes,
)
from harness.quant.blocks import block_inputs, blockwise_report, decoder_blocks, first_output
from harness.quant.rtn import fake_quantize
from harness.records import QuantConfig, QuantReport


@dataclass(frozen=True)
class AWQConfig(QuantConfig):
    """AWQ at ``bits``; ``group_size=None`` means one grid per output channel."""

    method: str = field(init=False, default="awq")
    bits: int = 4
    group_size: int | None = 128
    symmetric: bool = False
    grid_size: int = 20  # exponents α = 0, 1/n, …, (n-1)/n tried
    duo_scaling: bool = False  # s = |x|^α / |w|^(1-α) (AutoAWQ's default) instead of |x|^α
    clip: bool = True  # search each group's clipping range
    clip_grid: int = 20  # clipping ranges max·(1 - i/clip_grid) tried ...
    max_shrink: float = 0.5  # ... down to max·(1 - max_shrink)
    clip_tokens: int = 512  # calibration tokens the clipping search reads
    search_samples: int = 8  # calibration sequences (whole batches) the scale search's
    # output error is measured on (every sequence feeds the activation statistics); 20
    # forwards of each block over all 32 would take ~13 min at 1 thread for a 135M model
    no_clip: tuple[str, ...] = ("*q_proj", "*k_proj", "*query*", "*key*")
    batch_size: int = 8  # calibration sequences per forward pass
    ignore: tuple[str, ...] = ("lm_head",)

    supported_bits: ClassVar[tuple[int, ...]] = (8, 7, 6, 5, 4, 3, 2)
    needs_calibration: ClassVar[bool] = True

    def __post_init__(self) -> None:
        check_bits(self)
        if self.group_size is not None and self.group_size < 1:
            raise ValueError(f"method 'awq': group_size must be positive, not {self.group_size}")
        if min(self.grid_size, self.clip_grid, self.clip_tokens, self.search_samples) < 1:
            raise ValueError("method 'awq': grid_size, clip_grid, clip_tokens and search_samples "
                             "must be positive")  # fmt: skip
        if not 0 <= self.max_shrink < 1:
            raise ValueError(f"method 'awq': max_shrink must lie in [0, 1), not {self.max_shrink}")

    @property
    def variant_name(self) -> str:
        group = f"g{self.group_size}" if self.group_size else ""
        return f"awq-w{self.bits}{group}" + ("-sym" if self.symmetric else "")


@dataclass
class InputGroup:
    """Linear layers that read the same input, the smallest module holding them all
    (``inspect``), and per calibration batch: their input, and ``inspect``'s call and
    float output."""

    layers: list[nn.Linear]
    inspect: nn.Module
    inputs: list[torch.Tensor] = field(default_factory=list)
    calls: list[tuple[tuple, dict, torch.Tensor]] = field(default_factory=list)


def _smallest_holder(block: nn.Module, layers: list[nn.Linear]) -> nn.Module:
    wanted = {id(layer) for layer in layers}
    holders = [m for m in block.modules() if wanted <= {id(s) for s in m.modules()}]
    return min(holders, key=lambda m: sum(1 for _ in m.modules()))


def input_groups(
    block: nn.Module, layers: list[nn.Linear], batches: list
) -> tuple[list[InputGroup], list]:
    """Group ``layers`` by shared input (one forward on the first batch), then run every
    batch through ``block`` recording each group's inputs and its holder's calls; also
    returns the block's outputs per batch."""
    seen: dict[int, list[nn.Linear]] = {}
    order: list[torch.Tensor] = []

    def note(layer):
        def hook(_module, inputs, _output):
            x = inputs[0]
            for i, other in enumerate(order):
                if other is x:
                    seen[i].append(layer)
                    return
            order.append(x)
            seen[len(order) - 1] = [layer]

        return hook

    hooks = [layer.register_forward_hook(note(layer)) for layer in layers]
    try:
        args, kwargs = batches[0]
        block(*args, **kwargs)
    finally:
        for hook in hooks:
            hook.remove()
    groups = [InputGroup(seen[i], _smallest_holder(block, seen[i])) for i in range(len(order))]
    order.clear()

    def record(group):
        def pre(_module, args, kwargs):
            group.calls.append((args, dict(kwargs), None))

        def post(_module, _inputs, output):
            args, kwargs, _ = group.calls[-1]
            group.calls[-1] = (args, kwargs, first_output(output).detach())

        def first(_module, inputs, _output):
            group.inputs.append(inputs[0].detach())

        return [group.inspect.register_forward_pre_hook(pre, with_kwargs=True),
                group.inspect.register_forward_hook(post),
                group.layers[0].register_forward_hook(first)]  # fmt: skip

    hooks = [h for group in groups for h in record(group)]
    try:
        outputs = [first_output(block(*args, **kwargs)) for args, kwargs in batches]
    finally:
        for hook in hooks:
            hook.remove()
    return groups, outputs


def channel_scales(x_mean: torch.Tensor, w_mean: torch.Tensor | None, alpha: float) -> torch.Tensor:
    """AWQ's per-input-channel scale at exponent ``alpha``, normalised so max·min = 1."""
    s = x_mean.pow(alpha)
    if w_mean is not None:
        s = s / (w_mean.pow(1 - alpha) + 1e-4)
    s = s.clamp(min=1e-4)
    return s / (s.max() * s.min()).sqrt()


def _weight_magnitude(weight: torch.Tensor, group_size: int | None) -> torch.Tensor:
    """Mean over output rows of |w| relative to its group's largest |w| (AutoAWQ's w_mean)."""
    rows, cols = weight.shape
    g = cols if group_size is None else min(group_size, cols)
    parts = []
    for start in range(0, cols, g):
        block = weight[:, start : start + g].abs()
        parts.append(block / (block.amax(dim=1, keepdim=True) + 1e-6))
    return torch.cat(parts, dim=1).mean(0)


def search_scales(group: InputGroup, config: AWQConfig) -> tuple[torch.Tensor, list[float]]:
    """The scale whose quantized weights change ``group.inspect``'s output least on the
    calibration batches; also every α's loss. The layers are left as they were."""
    cols = group.layers[0].in_features
    x_mean = torch.cat([x.reshape(-1, cols) for x in group.inputs]).abs().float().mean(0)
    originals = [layer.weight.detach().clone() for layer in group.layers]
    w_mean = None
    if config.duo_scaling:
        w_mean = _weight_magnitude(torch.cat([w.float() for w in originals]), config.group_size)
    calls = group.calls[: -(-config.search_samples // config.batch_size)]
    losses, best = [], None
    try:
        for step in range(config.grid_size):
            scales = channel_scales(x_mean, w_mean, step / config.grid_size)
            for layer, weight in zip(group.layers, originals, strict=True):
                layer.weight.copy_(_scaled_rtn(weight.float(), scales, config).to(weight.dtype))
            loss = sum(float((first_output(group.inspect(*args, **kwargs)) - out).float().pow(2).sum())
                       for args, kwargs, out in calls)  # fmt: skip
            losses.append(loss)
            if best is None or loss < best[0]:
                best = (loss, scales)
    finally:
        for layer, weight in zip(group.layers, originals, strict=True):
            layer.weight.copy_(weight)
    return best[1], losses


def _scaled_rtn(weight: torch.Tensor, scales: torch.Tensor, config: AWQConfig) -> torch.Tensor:
    return fake_quantize(weight * scales, config.bits, config.group_size, config.symmetric) / scales


def search_clip(weight: torch.Tensor, inputs: torch.Tensor, config: AWQConfig) -> torch.Tensor:
    """``weight`` [out, in] with every group clipped to the symmetric range ±m that
    minimises the group's output error on ``inputs`` [tokens, in] after quantization,
    m from max|w| down to (1 - max_shrink)·max|w|."""
    rows, cols = weight.shape
    g = cols if config.group_size is None else min(config.group_size, cols)
    clipped = weight.clone()
    for start in range(0, cols, g):
        w = weight[:, start : start + g]
        x = inputs[:, start : start + g]
        exact = x @ w.T
        top = w.abs().amax(dim=1, keepdim=True)
        best_err = torch.full((rows,), float("inf"))
        for step in range(max(1, int(config.max_shrink * config.clip_grid))):
            m = top * (1 - step / config.clip_grid)
            q = fake_quantize(torch.clamp(w, -m, m), config.bits, None, config.symmetric)
            err = (x @ q.T - exact).pow(2).mean(0)
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            clipped[better, start : start + g] = torch.clamp(w[better], -m[better], m[better])
    return clipped


def _clip_rows(inputs: list[torch.Tensor], scales: torch.Tensor, n: int) -> torch.Tensor:
    """``n`` calibration positions spread evenly over all of them, divided by the scales."""
    x = torch.cat([t.reshape(-1, t.shape[-1]) for t in inputs]).float()
    step = max(1, len(x) // n)
    return x[::step][:n] / scales


@register_method(AWQConfig)
def quantize_awq(model: nn.Module, config: AWQConfig, calib=None) -> QuantReport:
    if calib is None:
        raise InputError("method 'awq' needs calibration data (see --calibration)")
    layers = select_linears(model, config.ignore)
    names = {id(layer): name for name, layer in layers}
    rest = unquantized_bytes(model, layers)
    blocks = decoder_blocks(model, layers, "awq")
    batches = block_inputs(model, blocks[0], calib.tokens, config.batch_size)
    done: set[int] = set()
    for block in tqdm(blocks, desc="awq", unit="block", leave=False, disable=None, file=sys.stderr):
        mine = [m for m in block.modules() if id(m) in names]
        groups, outputs = input_groups(block, mine, batches)
        found = [search_scales(group, config)[0] for group in groups]
        for group, scales in zip(groups, found, strict=True):
            clip_inputs = (
                _clip_rows(group.inputs, scales, config.clip_tokens) if config.clip else None
            )
            for layer in group.layers:
                weight = layer.weight.detach().float() * scales
                if clip_inputs is not None and not any(
                    fnmatch.fnmatchcase(names[id(layer)], p) for p in config.no_clip
                ):
                    weight = search_clip(weight, clip_inputs, config)
                quantized = fake_quantize(weight, config.bits, config.group_size, config.symmetric)
                layer.weight.copy_((quantized / scales).to(layer.weight.dtype))
                done.add(id(layer))
        del groups
        batches = [(args, {**kwargs, "hidden_states": out})
                   for (args, kwargs), out in zip(batches, outputs, strict=True)]  # fmt: skip
    return blockwise_report(config, layers, done, rest)
