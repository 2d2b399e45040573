"""The master copy puts the base weights back after every method, from memory or from the safetensors files."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from harness.quant import (
    make_config,
    quantize_,
)
from harness.quant.master import MasterCopy
from tests.quant.methods import SWEEPS, fit, logits


@pytest.mark.parametrize("method", SWEEPS)
def test_master_copy_restores_the_base_model_after_every_method(method, tiny_model, calib, probe):
    model = copy.deepcopy(tiny_model)
    master = MasterCopy(model)
    reference = logits(model, probe)
    quantize_(model, make_config(method, bits=SWEEPS[method][0], **fit(method)), calib)
    assert not torch.equal(logits(model, probe), reference)
    master.restore()
    assert torch.equal(logits(model, probe), reference)
    assert all(type(m) is nn.Linear for n, m in model.named_modules() if n.endswith("_proj"))


def test_master_copy_reads_weights_back_from_the_safetensors_files(tiny_model_dir, calib, probe):
    from harness.model.load import load_model, weight_files
    from harness.records import ModelSpec

    model, _ = load_model(ModelSpec(str(tiny_model_dir)))
    files = weight_files(ModelSpec(str(tiny_model_dir)))
    master = MasterCopy(model, files)
    assert master.source == "disk" and master.tensors is None
    reference = logits(model, probe)
    for method in ("rtn", "hqq", "torchao"):
        quantize_(model, make_config(method, bits=2, **fit(method)), calib)
        assert not torch.equal(logits(model, probe), reference)
        master.restore()
        assert torch.equal(logits(model, probe), reference)
    bf16, _ = load_model(ModelSpec(str(tiny_model_dir), dtype="bfloat16"))
    assert MasterCopy(bf16, files).source == "memory"  # the file holds float32: keep a copy
    assert MasterCopy(model, []).source == "memory"
