"""torchao as a method: weight-only intx and int8 weights with int8 (or fp8) activations."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from harness.errors import InputError
from harness.quant import (
    make_config,
    quantize_,
)
from tests.quant.methods import rel_error


def test_torchao_intx_is_stored_one_byte_per_value_whatever_the_bits():
    sizes = set()
    for bits in (2, 4):
        model = nn.Sequential(nn.Linear(128, 64, bias=False))
        sizes.add(quantize_(model, make_config("torchao", bits=bits, ignore=())).packed_bytes)
    assert len(sizes) == 1


def test_torchao_w8a8_quantizes_activations_per_token_and_weights_per_row():
    """Against the rule written out: symmetric int8 codes with torchao's scale
    (max|t| / 127.5), one per weight row and one per activation row (token). The output
    is 10x closer to it than to weight-only int8."""
    torch.manual_seed(3)
    layer = nn.Linear(128, 64, bias=False)
    weight = layer.weight.detach().clone()
    x = torch.randn(2, 5, 128) * torch.linspace(0.1, 4, 128)
    model = nn.Sequential(layer)
    config = make_config("torchao", bits=8, group_size=None, activations="int8", ignore=())
    report = quantize_(model, config)

    def int8(t):
        scale = t.abs().amax(dim=-1, keepdim=True) / 127.5
        return torch.clamp(torch.round(t / scale), -128, 127) * scale

    with torch.no_grad():
        got = model(x)
    assert rel_error(got, int8(x) @ int8(weight).T) < 2e-3
    assert rel_error(got, x @ int8(weight).T) > 5e-3  # activations are quantized too
    assert report.effective_bits == pytest.approx(8 + 32 / 128) and not report.simulated
    assert "activations quantized to int8" in report.note


def test_fp8_activations_need_a_device_torchao_runs_them_on():
    model = nn.Sequential(nn.Linear(128, 64, bias=False))
    config = make_config("torchao", bits=8, group_size=None, activations="fp8", ignore=())
    with pytest.raises(InputError, match="torchao-w8a8-fp8.*cannot run here"):
        quantize_(model, config)
