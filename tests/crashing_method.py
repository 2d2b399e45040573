"""A quantization method whose process dies, for the Ray fault tests: the first time it
runs (its ``marker`` file absent) or, with ``always``, every time; otherwise it is RTN.
Only ever run it in a Ray worker."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from harness.quant import register_method
from harness.quant.rtn import RTNConfig, quantize_rtn


@dataclass(frozen=True)
class CrashingConfig(RTNConfig):
    method: str = field(init=False, default="crash")
    marker: str = ""
    always: bool = False

    @property
    def variant_name(self) -> str:
        return f"crash-w{self.bits}" + ("-always" if self.always else "")


@register_method(CrashingConfig)
def quantize_crashing(model, config: CrashingConfig, calib=None):
    if config.always or not Path(config.marker).exists():
        Path(config.marker).touch()
        os._exit(1)  # the worker dies mid-variant, as an OOM kill would
    return quantize_rtn(model, RTNConfig(bits=config.bits, group_size=config.group_size), calib)
