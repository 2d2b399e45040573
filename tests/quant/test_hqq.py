"""HQQ as a method: layers become HQQLinear with packed codes, every group holds at most
2^bits levels, and the size counts the codes HQQ stores plus 16-bit scale and zero."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from harness.errors import InputError
from harness.quant import make_config, quantize_


def test_hqq_packs_codes_on_a_grid_of_2_to_the_bits_levels_per_group():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(128, 32, bias=False))
    weight = model[0].weight.detach().clone()
    x = torch.randn(4, 128)
    with torch.no_grad():
        before = model(x)
    report = quantize_(model, make_config("hqq", bits=3, group_size=32, ignore=()))
    packed = model[0]
    assert type(packed).__name__ == "HQQLinear" and not report.simulated
    restored = packed.dequantize().reshape(32, 128).float()
    levels = [len(torch.unique(group)) for group in restored.reshape(-1, 32)]
    assert max(levels) <= 8
    assert float((restored - weight).norm() / weight.norm()) < 0.3
    with torch.no_grad():
        assert torch.allclose(model(x), x @ restored.T, atol=1e-4)  # the layer computes with it
        assert not torch.allclose(model(x), before, atol=1e-3)
    assert report.effective_bits == pytest.approx(3 + 32 / 32, rel=0.2)


def test_groups_must_divide_the_rows():
    with pytest.raises(InputError, match="group_size 64 does not divide the 96-wide rows"):
        quantize_(
            nn.Sequential(nn.Linear(96, 8)), make_config("hqq", bits=4, group_size=64, ignore=())
        )
