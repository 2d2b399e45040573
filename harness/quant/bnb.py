"""bitsandbytes: LLM.int8 (8 bits) and the 4-bit NF4 / FP4 data types.

Every selected Linear is replaced by bitsandbytes' own ``Linear8bitLt`` or ``Linear4bit``
(packed codes and bitsandbytes' kernels, on CPU or CUDA), so the variant evaluated is
the one ``BitsAndBytesConfig`` would load. ``int8`` keeps one float32 scale per row and,
with ``threshold`` > 0, runs activation outlier columns in float (LLM.int8's mixed
decomposition); ``nf4``/``fp4`` keep one float32 absmax per block of ``blocksize``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from torch import nn

from harness.quant import (
    check_bits,
    register_method,
    require,
    select_linears,
    size_report,
    unquantized_bytes,
)
from harness.records import QuantConfig, QuantReport

FORMATS: dict[int, tuple[str, ...]] = {8: ("int8",), 4: ("nf4", "fp4")}


@dataclass(frozen=True)
class BnbConfig(QuantConfig):
    """``format=None`` picks ``int8`` at 8 bits and ``nf4`` at 4 bits."""

    method: str = field(init=False, default="bnb")
    bits: int = 4
    format: str | None = None
    blocksize: int = 64  # 4-bit formats only
    double_quant: bool = False  # 4-bit only: quantize the absmax values too (QLoRA)
    threshold: float = 6.0  # int8 only: activation outlier threshold (0 disables)
    ignore: tuple[str, ...] = ("lm_head",)

    supported_bits: ClassVar[tuple[int, ...]] = tuple(FORMATS)

    def __post_init__(self) -> None:
        check_bits(self)
        if self.format is not None and self.format not in FORMATS[self.bits]:
            raise ValueError(
                f"method 'bnb': format {self.format!r} is not a {self.bits}-bit format "
                f"({', '.join(FORMATS[self.bits])})"
            )
        if self.blocksize not in (32, 64, 128, 256, 512, 1024, 2048, 4096):
            raise ValueError(f"method 'bnb': blocksize must be a power of two from 32 to 4096, "
                             f"not {self.blocksize}")  # fmt: skip

    @property
    def kind(self) -> str:
        return self.format or FORMATS[self.bits][0]

    @property
    def variant_name(self) -> str:
        if self.kind == "int8":
            return "bnb-w8"
        suffix = "" if self.kind == "nf4" else f"-{self.kind}"
        return f"bnb-w4g{self.blocksize}{suffix}"


def _int8_linear(bnb, layer: nn.Linear, threshold: float) -> nn.Module:
    new = bnb.nn.Linear8bitLt(layer.in_features, layer.out_features, bias=layer.bias is not None,
                              has_fp16_weights=False, threshold=threshold, device="meta")  # fmt: skip
    new.weight = bnb.nn.Int8Params(layer.weight.detach().clone(), requires_grad=False,
                                   has_fp16_weights=False)  # fmt: skip
    if layer.bias is not None:
        new.bias = nn.Parameter(layer.bias.detach().clone(), requires_grad=False)
    return new.to(layer.weight.device)  # quantizes


def _4bit_linear(bnb, layer: nn.Linear, config: BnbConfig) -> nn.Module:
    new = bnb.nn.Linear4bit(layer.in_features, layer.out_features, bias=layer.bias is not None,
                            compute_dtype=layer.weight.dtype, quant_type=config.kind,
                            compress_statistics=config.double_quant, device="meta")  # fmt: skip
    new.weight = bnb.nn.Params4bit(layer.weight.detach().clone(), requires_grad=False,
                                   quant_type=config.kind, blocksize=config.blocksize,
                                   compress_statistics=config.double_quant)  # fmt: skip
    if layer.bias is not None:
        new.bias = nn.Parameter(layer.bias.detach().clone(), requires_grad=False)
    return new.to(layer.weight.device)  # quantizes


def _stored_bits(module: nn.Module) -> int:
    weight = module.weight
    tensors = [weight.data]
    state = getattr(weight, "quant_state", None)
    if state is not None:
        tensors.append(state.absmax)
        if state.nested:  # double quantization: 8-bit absmax plus its own absmax and code
            tensors += [state.state2.absmax, state.state2.code]
    elif getattr(weight, "SCB", None) is not None:
        tensors.append(weight.SCB)
    return sum(8 * t.numel() * t.element_size() for t in tensors)


@register_method(BnbConfig)
def quantize_bnb(model: nn.Module, config: BnbConfig, calib=None) -> QuantReport:
    bnb = require("bitsandbytes", "bnb")
    layers = select_linears(model, config.ignore)
    rest = unquantized_bytes(model, layers)
    stored_bits = n_weights = 0
    for name, layer in layers:
        if config.kind == "int8":
            new = _int8_linear(bnb, layer, config.threshold)
        else:
            new = _4bit_linear(bnb, layer, config)
        model.set_submodule(name, new)
        stored_bits += _stored_bits(new)
        n_weights += layer.weight.numel()
    return size_report("bnb", config.bits, len(layers), n_weights, stored_bits, rest,
                       simulated=False, note=f"{config.kind}: packed codes and float32 "
                       "scales as bitsandbytes stores them")  # fmt: skip
