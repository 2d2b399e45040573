"""llama.cpp's block formats (Q8_0, Q5_0/Q5_1, Q4_0/Q4_1) through the ``gguf`` package.

Each row is cut into blocks of 32 weights; a block stores its codes plus an fp16 scale
(``_0`` formats: symmetric) or scale and minimum (``_1`` formats). ``gguf`` quantizes
with numpy exactly as llama.cpp writes the file; the variant is evaluated from the
dequantized weights (simulated: ``gguf`` has no matmul kernels), and its size is the
real byte count of the quantized blocks. K-quants need llama.cpp's compiled quantizer,
so they are not offered here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from harness.errors import InputError
from harness.quant import (
    check_bits,
    register_method,
    select_linears,
    size_report,
    unquantized_bytes,
)
from harness.records import QuantConfig, QuantReport

# bits -> the formats at that width; the first one is the default
FORMATS: dict[int, tuple[str, ...]] = {8: ("Q8_0",), 5: ("Q5_0", "Q5_1"), 4: ("Q4_0", "Q4_1")}


@dataclass(frozen=True)
class GGUFConfig(QuantConfig):
    """A llama.cpp block format; ``qtype=None`` picks the ``_0`` format of ``bits``."""

    method: str = field(init=False, default="gguf")
    bits: int = 4
    qtype: str | None = None
    ignore: tuple[str, ...] = ("lm_head",)

    supported_bits: ClassVar[tuple[int, ...]] = tuple(FORMATS)

    def __post_init__(self) -> None:
        check_bits(self)
        if self.qtype is not None and self.qtype.upper() not in FORMATS[self.bits]:
            options = ", ".join(FORMATS[self.bits])
            raise ValueError(
                f"method 'gguf': qtype {self.qtype!r} is not a {self.bits}-bit format ({options})"
            )

    @property
    def format(self) -> str:
        return (self.qtype or FORMATS[self.bits][0]).upper()

    @property
    def variant_name(self) -> str:
        suffix = "" if self.format == FORMATS[self.bits][0] else f"-{self.format.lower()}"
        return f"gguf-w{self.bits}g32{suffix}"


@register_method(GGUFConfig)
def quantize_gguf(model: nn.Module, config: GGUFConfig, calib=None) -> QuantReport:
    import gguf
    from gguf import quants

    qtype = gguf.GGMLQuantizationType[config.format]
    block, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
    layers = select_linears(model, config.ignore)
    rest = unquantized_bytes(model, layers)
    stored_bits = n_weights = 0
    for name, layer in layers:
        weight = layer.weight.detach().float().cpu().numpy()
        if weight.shape[1] % block:
            raise InputError(
                f"method 'gguf': layer {name} has rows of {weight.shape[1]} weights, "
                f"not a multiple of the {block}-weight blocks of {config.format}"
            )
        packed = quants.quantize(weight, qtype)
        restored = torch.from_numpy(quants.dequantize(packed, qtype).copy())
        layer.weight.copy_(restored.reshape(layer.weight.shape).to(layer.weight.dtype))
        stored_bits += 8 * packed.nbytes
        n_weights += weight.size
    return size_report("gguf", config.bits, len(layers), n_weights, stored_bits, rest,
                       simulated=True, note=f"{config.format}: {block_bytes} bytes per block of "
                       f"{block} (codes + fp16 scale/min), as llama.cpp stores it")  # fmt: skip
