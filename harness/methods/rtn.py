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

import torch
from torch import nn

from harness.methods import model_bytes_16bit, register_method, select_linears
from harness.records import QuantConfig, QuantReport

SUPPORTED_BITS = range(2, 9)


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

    def __post_init__(self) -> None:
        for b in (self.bits, *(b for _, b in self.layer_bits)):
            if b not in SUPPORTED_BITS:
                raise ValueError(f"method 'rtn' supports bits 2-8, not {b}")
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


def _fake_quantize_groups(groups: torch.Tensor, bits: int, symmetric: bool) -> torch.Tensor:
    """Quantize->dequantize along the last dimension (one group per row of it)."""
    if symmetric:
        qmax = 2 ** (bits - 1) - 1
        scale = groups.abs().amax(dim=-1, keepdim=True).clamp(min=1e-12) / qmax
        codes = torch.clamp(torch.round(groups / scale), -qmax - 1, qmax)
        return codes * scale
    qmax = 2**bits - 1
    low = groups.amin(dim=-1, keepdim=True)
    high = groups.amax(dim=-1, keepdim=True)
    scale = ((high - low) / qmax).clamp(min=1e-12)
    zero = torch.clamp(torch.round(-low / scale), 0, qmax)
    codes = torch.clamp(torch.round(groups / scale) + zero, 0, qmax)
    return (codes - zero) * scale


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


def storage_bits(shape: tuple[int, int], config: RTNConfig, bits: int | None = None) -> int:
    """Bits to store one quantized weight matrix: codes plus per-group scale (and zero)."""
    rows, cols = shape
    groups_per_row = 1 if config.group_size is None else math.ceil(cols / config.group_size)
    per_group = config.scale_bits + (0 if config.symmetric else config.zero_bits)
    return (bits or config.bits) * rows * cols + rows * groups_per_row * per_group


@register_method(RTNConfig)
def quantize_rtn(model: nn.Module, config: RTNConfig, calib=None) -> QuantReport:
    layers = select_linears(model, config.ignore)
    total_bits = n_weights = 0
    for name, layer in layers:
        bits = config.bits_for(name)
        layer.weight.copy_(fake_quantize(layer.weight, bits, config.group_size, config.symmetric))
        total_bits += storage_bits(tuple(layer.weight.shape), config, bits)
        n_weights += layer.weight.numel()
    packed = math.ceil(total_bits / 8)
    rest = model_bytes_16bit(model, excluding={id(layer.weight) for _, layer in layers})
    return QuantReport(
        method="rtn",
        bits=config.bits,
        n_layers=len(layers),
        n_weights=n_weights,
        packed_bytes=packed,
        effective_bits=total_bits / max(n_weights, 1),
        model_bytes=packed + rest,
        simulated=True,
        seconds=0.0,
    )
