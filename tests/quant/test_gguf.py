"""GGUF's legacy formats as a method, against llama.cpp's Q8_0 rule written out: blocks
of 32 weights, scale ``d = max|w| / 127``, codes ``round(w / d)``, stored and read back
with ``d`` in fp16."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from harness.errors import InputError
from harness.quant import make_config, quantize_


def test_q8_0_is_the_rule_written_out_and_counts_its_blocks():
    torch.manual_seed(0)
    layer = nn.Linear(128, 16, bias=False)
    weight = layer.weight.detach().clone()
    report = quantize_(nn.Sequential(layer), make_config("gguf", bits=8, ignore=()))
    blocks = weight.reshape(16, 4, 32)
    scale = blocks.abs().amax(dim=-1, keepdim=True) / 127
    expected = (torch.round(blocks * (1 / scale)) * scale.half().float()).reshape(16, 128)
    assert torch.equal(layer.weight.detach(), expected)
    assert report.effective_bits == pytest.approx(34 * 8 / 32)  # 32 codes + an fp16 scale per block


def test_q4_0_keeps_at_most_16_levels_per_block_and_rows_must_fit_the_blocks():
    torch.manual_seed(1)
    layer = nn.Linear(64, 8, bias=False)
    quantize_(nn.Sequential(layer), make_config("gguf", bits=4, ignore=()))
    levels = [len(torch.unique(block)) for block in layer.weight.detach().reshape(-1, 32)]
    assert max(levels) <= 16 and min(levels) > 4
    with pytest.raises(InputError, match="not a multiple of the 32-weight blocks"):
        quantize_(nn.Sequential(nn.Linear(48, 8)), make_config("gguf", bits=4, ignore=()))
