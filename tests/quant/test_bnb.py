"""bitsandbytes as a method: how its packed weights are counted."""

from __future__ import annotations

import pytest
from torch import nn

from harness.quant import (
    make_config,
    quantize_,
)


def test_bnb_int8_keeps_a_float32_scale_per_row():
    model = nn.Sequential(nn.Linear(128, 64, bias=False))
    report = quantize_(model, make_config("bnb", bits=8, ignore=()))
    assert report.effective_bits == pytest.approx(8 + 32 / 128)
    assert make_config("bnb", bits=8).variant_name == "bnb-w8"
