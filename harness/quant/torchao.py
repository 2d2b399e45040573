"""torchao's configs: weight-only ``Int8WeightOnlyConfig`` (8 bits, one scale per row)
and ``IntxWeightOnlyConfig`` (2-8 bits, asymmetric, one scale and zero-point per group);
and weights *and* activations (W8A8): ``Int8DynamicActivationInt8WeightConfig`` (int8
weights per row, activations quantized per token at run time, symmetric) and
``Float8DynamicActivationFloat8WeightConfig`` (e4m3 weights and activations per row;
torchao 0.18 runs it only on CUDA with compute capability >= 8.9).

torchao swaps each selected weight for its quantized tensor subclass and runs its own
kernels, so the variant is evaluated as torchao would serve it. Size is counted from
the tensors torchao keeps: on CPU the ``intx`` codes are stored one int8 per value
(not bit-packed), so a 2-bit variant takes as much memory as an 8-bit one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import ClassVar

from torch import nn

from harness.errors import InputError
from harness.quant import (
    check_bits,
    register_method,
    require,
    select_linears,
    size_report,
    unquantized_bytes,
)
from harness.records import QuantConfig, QuantReport


@dataclass(frozen=True)
class TorchaoConfig(QuantConfig):
    """``group_size=None`` (at 8 bits) uses ``Int8WeightOnlyConfig``, one scale per row;
    otherwise ``IntxWeightOnlyConfig`` with ``PerGroup(group_size)``. ``activations``
    ``int8`` or ``fp8`` quantizes activations too (8 bits, per-row weights)."""

    method: str = field(init=False, default="torchao")
    bits: int = 4
    group_size: int | None = 64
    activations: str | None = None  # None (weight-only), "int8" or "fp8"
    ignore: tuple[str, ...] = ("lm_head",)

    supported_bits: ClassVar[tuple[int, ...]] = (8, 7, 6, 5, 4, 3, 2)

    def __post_init__(self) -> None:
        check_bits(self)
        if self.activations not in (None, "int8", "fp8"):
            raise ValueError(f"method 'torchao': activations must be int8 or fp8, not "
                             f"{self.activations!r}")  # fmt: skip
        if self.activations and (self.bits != 8 or self.group_size is not None):
            raise ValueError("method 'torchao': activation quantization takes 8-bit weights "
                             "with per-row scales (bits: 8, group_size: null)")  # fmt: skip
        if self.group_size is None and self.bits != 8:
            raise ValueError("method 'torchao': per-row scales (no group_size) only at 8 bits")
        if self.group_size is not None and self.group_size < 1:
            raise ValueError(
                f"method 'torchao': group_size must be positive, not {self.group_size}"
            )

    @property
    def variant_name(self) -> str:
        if self.activations:
            return "torchao-w8a8" + ("-fp8" if self.activations == "fp8" else "")
        return f"torchao-w{self.bits}" + (f"g{self.group_size}" if self.group_size else "")


def _library_config(config: TorchaoConfig):
    logging.getLogger("torchao").setLevel(logging.ERROR)  # it logs every missing CUDA kernel
    torchao = require("torchao.quantization", "torchao")
    import torch

    if config.activations == "int8":
        return torchao.Int8DynamicActivationInt8WeightConfig()
    if config.activations == "fp8":
        return torchao.Float8DynamicActivationFloat8WeightConfig(granularity=torchao.PerRow())
    if config.group_size is None:
        return torchao.Int8WeightOnlyConfig()
    from torchao.quantization.granularity import PerGroup
    from torchao.quantization.quant_primitives import MappingType

    return torchao.IntxWeightOnlyConfig(weight_dtype=getattr(torch, f"int{config.bits}"),
                                        granularity=PerGroup(config.group_size),
                                        mapping_type=MappingType.ASYMMETRIC)  # fmt: skip


@register_method(TorchaoConfig)
def quantize_torchao(model: nn.Module, config: TorchaoConfig, calib=None) -> QuantReport:
    library_config = _library_config(config)
    from torchao.quantization import quantize_

    layers = select_linears(model, config.ignore)
    for name, layer in layers:
        if config.group_size and layer.in_features % config.group_size:
            raise InputError(f"method 'torchao': group_size {config.group_size} does not divide "
                             f"the {layer.in_features}-wide rows of {name}")  # fmt: skip
    rest = unquantized_bytes(model, layers)
    chosen = {id(layer) for _, layer in layers}
    try:
        quantize_(model, library_config, filter_fn=lambda module, _name: id(module) in chosen)
    except (AssertionError, NotImplementedError, RuntimeError) as exc:  # e.g. FP8 without CUDA
        raise InputError(
            f"method 'torchao' ({config.variant_name}) cannot run here: {str(exc).strip()[:300]}"
        ) from None
    stored_bits = n_weights = 0
    for _, layer in layers:
        weight = layer.weight
        for key in weight.tensor_data_names:
            tensor = getattr(weight, key)
            stored_bits += 8 * tensor.numel() * tensor.element_size()
        n_weights += weight.numel()
    return size_report("torchao", config.bits, len(layers), n_weights, stored_bits, rest,
                       simulated=False, note=_note(config))  # fmt: skip


def _note(config: TorchaoConfig) -> str:
    note = "tensors as torchao stores them (intx: one int8 per value; scales in the model's dtype)"
    if config.activations:
        note += (f"; activations quantized to {config.activations} per token at run time, "
                 "matmul outputs in the model's dtype")  # fmt: skip
    return note
