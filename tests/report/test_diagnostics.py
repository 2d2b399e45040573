"""diagnostics.md, its tables and plots, from a real diagnosis of the tiny model."""

from __future__ import annotations

import copy

import torch

from harness.diagnose.weights import (
    diagnose,
)
from harness.quant.rtn import RTNConfig
from harness.report.diagnostics import write_diagnostics
from tests.diagnose.probes import TEXTS


def test_diagnose_end_to_end_writes_every_file(tiny_model, tokenizer, tmp_path):
    configs = [RTNConfig(bits=b, group_size=32) for b in (8, 4, 2)]
    model = copy.deepcopy(tiny_model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = diagnose(model, tokenizer, TEXTS, configs, keep=1)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    growth = result["growth"].groupby("variant")["rel_error"].last()
    assert growth["rtn-w2g32"] > growth["rtn-w4g32"] > growth["rtn-w8g32"]
    sqnr = result["rounding"].groupby("bits")["sqnr_db"].mean()
    assert sqnr[8] > sqnr[4] > sqnr[2]
    paths = write_diagnostics(result, tmp_path / "diag")
    assert all(p.exists() for p in paths.values())
    assert "Sensitivity" in paths["report"].read_text()
