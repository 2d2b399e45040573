"""Half-Quadratic Quantization through the ``hqq`` library (calibration-free).

HQQ fits each group's zero-point (and scale) by minimising a sparsity-promoting error
with half-quadratic splitting, instead of taking the min/max grid. Every selected Linear
is replaced by an ``HQQLinear`` holding bit-packed codes; the variant is evaluated from
those packed weights (PyTorch backend: dequantize, then matmul in the model's dtype).
"""

from __future__ import annotations

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
class HQQConfig(QuantConfig):
    """HQQ at ``bits`` with one scale and zero-point per ``group_size`` weights of a row
    (a multiple of 8 that divides every row). ``round_zero=None`` keeps the library's
    default (integer zero-points at 4 bits only)."""

    method: str = field(init=False, default="hqq")
    bits: int = 4
    group_size: int = 64
    round_zero: bool | None = None
    ignore: tuple[str, ...] = ("lm_head",)

    supported_bits: ClassVar[tuple[int, ...]] = (8, 6, 5, 4, 3, 2, 1)

    def __post_init__(self) -> None:
        check_bits(self)
        if self.group_size is None or self.group_size < 8 or self.group_size % 8:
            raise ValueError(
                f"method 'hqq': group_size must be a multiple of 8, not {self.group_size}"
            )

    @property
    def variant_name(self) -> str:
        return f"hqq-w{self.bits}g{self.group_size}"


@register_method(HQQConfig)
def quantize_hqq(model: nn.Module, config: HQQConfig, calib=None) -> QuantReport:
    hqq = require("hqq.core.quantize", "hqq")
    hqq.HQQLinear.set_backend(hqq.HQQBackend.PYTORCH)
    quant_config = hqq.BaseQuantizeConfig(nbits=config.bits, group_size=config.group_size, axis=1)
    if config.round_zero is not None:
        quant_config["weight_quant_params"]["round_zero"] = config.round_zero
    layers = select_linears(model, config.ignore)
    for name, layer in layers:
        if layer.in_features % config.group_size:
            raise InputError(
                f"method 'hqq': group_size {config.group_size} does not divide the "
                f"{layer.in_features}-wide rows of {name}; choose one that does (e.g. 64)"
            )
    rest = unquantized_bytes(model, layers)
    stored_bits = n_weights = 0
    for name, layer in layers:
        weight = layer.weight
        packed = hqq.HQQLinear(layer, quant_config, del_orig=False, compute_dtype=weight.dtype,
                               device=str(weight.device))  # fmt: skip
        del packed.linear_layer  # the master copy keeps the float layer; do not hold it twice
        model.set_submodule(name, packed)
        groups = packed.meta["scale"].numel()
        stored_bits += 8 * packed.W_q.numel() * packed.W_q.element_size() + 2 * 16 * groups
        n_weights += weight.numel()
    return size_report("hqq", config.bits, len(layers), n_weights, stored_bits, rest,
                       simulated=False, note="packed codes as stored by HQQLinear; scale and "
                       "zero-point counted at 16 bits per group (held in the model's dtype here)")  # fmt: skip
