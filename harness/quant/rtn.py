"""Reference round-to-nearest (RTN) weight-only quantization, simulated in float.

Each row of a Linear weight is split into groups of ``group_size`` input columns (the
last group may be shorter: 576-wide rows at g128 give four groups of 128 and one of 64).
Every group gets its own scale (and, when asymmetric, an integer zero-point), weights
are rounded to the nearest grid point and mapped back to float.
"""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from harness.quant import (
    check_bits,
    register_method,
    select_linears,
    size_report,
    unquantized_bytes,
)
from harness.records import QuantConfig, QuantReport

SUPPORTED_BITS = (8, 7, 6, 5, 4, 3, 2)


@dataclass(frozen=True)
class RTNConfig(QuantConfig):
    """Round-to-nearest. ``group_size=None`` means one group per output channel."""

    method: str = field(init=False, default="rtn")
    bits: int = 4
    group_size: int | None = 128
    symmetric: bool = False
    ignore: tuple[str, ...] = ("lm_head",)
    scale_bits: int = 16  # storage of each group's scale (fp16)
    zero_bits: int = 16  # storage of each group's zero-point (fp16), asymmetric only
    # mixed precision: (layer-name pattern, bits) pairs; the first match overrides ``bits``
    layer_bits: tuple[tuple[str, int], ...] = ()

    supported_bits: ClassVar[tuple[int, ...]] = SUPPORTED_BITS

    def __post_init__(self) -> None:
        check_bits(self, self.bits, *(b for _, b in self.layer_bits))
        if self.group_size is not None and self.group_size < 1:
            raise ValueError(f"method 'rtn': group_size must be positive, not {self.group_size}")

    @property
    def variant_name(self) -> str:
        group = f"g{self.group_size}" if self.group_size else ""
        mixed = f"-mp{len(self.layer_bits)}" if self.layer_bits else ""
        return f"rtn-w{self.bits}{group}" + ("-sym" if self.symmetric else "") + mixed

    def bits_for(self, layer_name: str) -> int:
        """The bit width of one layer: the first matching ``layer_bits`` pattern, else ``bits``."""
        for pattern, bits in self.layer_bits:
            if fnmatch.fnmatchcase(layer_name, pattern):
                return bits
        return self.bits


def grid(groups: torch.Tensor, bits: int, symmetric: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row (scale, zero-point) of the min/max grid of each row of ``groups`` (the zero
    is an integer code; 0 when symmetric).

    As in the reference GPTQ quantizer and gpt-fast, the range is stretched to include 0,
    so the integer zero-point always lies on the grid and a group whose values share one
    sign keeps its spread; an all-zero group gets the range [-1, 1].
    """
    if symmetric:
        qmax = 2 ** (bits - 1) - 1
        scale = groups.abs().amax(dim=-1, keepdim=True).clamp(min=1e-12) / qmax
        return scale, torch.zeros_like(scale)
    qmax = 2**bits - 1
    low = groups.amin(dim=-1, keepdim=True).clamp(max=0)
    high = groups.amax(dim=-1, keepdim=True).clamp(min=0)
    empty = (low == 0) & (high == 0)
    low, high = torch.where(empty, -1.0, low), torch.where(empty, 1.0, high)
    scale = (high - low) / qmax
    return scale, torch.round(-low / scale)


def round_to_grid(
    values: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int, symmetric: bool
) -> torch.Tensor:
    """Round ``values`` to the nearest code of the grid and map back to float."""
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if symmetric else (0, 2**bits - 1)
    codes = torch.clamp(torch.round(values / scale) + zero, low, high)
    return (codes - zero) * scale


def _fake_quantize_groups(groups: torch.Tensor, bits: int, symmetric: bool) -> torch.Tensor:
    """Quantize->dequantize along the last dimension (one group per row of it)."""
    scale, zero = grid(groups, bits, symmetric)
    return round_to_grid(groups, scale, zero, bits, symmetric)


def fake_quantize(
    weight: torch.Tensor, bits: int, group_size: int | None, symmetric: bool = False
) -> torch.Tensor:
    """Round-to-nearest quantize->dequantize of a 2-D weight, group-wise along its columns."""
    rows, cols = weight.shape
    w = weight.float()
    g = cols if group_size is None else min(group_size, cols)
    full = cols - cols % g
    parts = [_fake_quantize_groups(w[:, :full].reshape(rows, -1, g), bits, symmetric)]
    parts[0] = parts[0].reshape(rows, full)
    if full < cols:  # ragged last group
        parts.append(_fake_quantize_groups(w[:, full:], bits, symmetric))
    return torch.cat(parts, dim=1).to(weight.dtype)


def storage_bits(shape: tuple[int, int], bits: int, group_size: int | None, symmetric: bool,
                 scale_bits: int = 16, zero_bits: int = 16) -> int:  # fmt: skip
    """Bits to store one quantized weight matrix: codes plus per-group scale (and zero)."""
    rows, cols = shape
    groups_per_row = 1 if group_size is None else math.ceil(cols / group_size)
    per_group = scale_bits + (0 if symmetric else zero_bits)
    return bits * rows * cols + rows * groups_per_row * per_group


@register_method(RTNConfig)
def quantize_rtn(model: nn.Module, config: RTNConfig, calib=None) -> QuantReport:
    layers = select_linears(model, config.ignore)
    rest = unquantized_bytes(model, layers)
    total_bits = n_weights = 0
    for name, layer in layers:
        bits = config.bits_for(name)
        layer.weight.copy_(fake_quantize(layer.weight, bits, config.group_size, config.symmetric))
        total_bits += storage_bits(tuple(layer.weight.shape), bits, config.group_size, config.symmetric,
                                   config.scale_bits, config.zero_bits)  # fmt: skip
        n_weights += layer.weight.numel()
    return size_report("rtn", config.bits, len(layers), n_weights, total_bits, rest, simulated=True,
                       note="scales and zero-points counted at 16 bits")  # fmt: skip
