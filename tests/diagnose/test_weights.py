"""Diagnostics on planted cases: outliers, SQNR per bit, collapse, error growth,
base precision, sensitivity."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from harness.cli import EXIT_OK, main
from harness.diagnose.weights import (
    base_precision,
    block_prefixes,
    collapse_share,
    error_growth,
    hidden_states,
    probe_batch,
    sensitivity,
    suggest_plan,
    weight_outliers,
)
from harness.quant import quantize_
from harness.quant.master import MasterCopy
from harness.quant.rtn import RTNConfig, fake_quantize
from tests.conftest import make_model
from tests.diagnose.probes import TEXTS


def test_a_layer_with_planted_outliers_ranks_first(tiny_model):
    model = copy.deepcopy(tiny_model)
    w = model.model.layers[1].self_attn.v_proj.weight
    with torch.no_grad():
        w[3, 7] = 25 * w.std()
        w[10, 2] = -25 * w.std()
    table = weight_outliers(model)
    assert table.loc[0, "layer"] == "model.layers.1.self_attn.v_proj"
    assert (
        table.loc[0, "share_beyond_6std"] > 0
        and table.loc[0, "kurtosis"] > table.loc[1, "kurtosis"]
    )


def test_sqnr_rises_about_6_db_per_bit():
    torch.manual_seed(0)
    w = torch.randn(256, 512)
    sqnr = []
    for bits in range(3, 9):
        err = float((w - fake_quantize(w, bits, 64)).norm() / w.norm())
        sqnr.append(-20 * math.log10(err))
    steps = [b - a for a, b in zip(sqnr, sqnr[1:], strict=False)]
    assert all(5.0 < s < 7.0 for s in steps), steps


def test_collapse_share_rises_as_bits_fall():
    torch.manual_seed(1)
    w = torch.randn(64, 256)
    shares = [collapse_share(w, fake_quantize(w, bits, 32)) for bits in (8, 6, 4, 3, 2)]
    assert shares == sorted(shares) and shares[0] < 0.1 and shares[-1] > 0.8


def test_error_growth_steps_up_at_the_perturbed_layer(tokenizer):
    model = make_model(len(tokenizer), layers=4)
    batch = probe_batch(tokenizer, TEXTS)
    base = hidden_states(model, batch)
    with torch.no_grad():
        model.model.layers[2].mlp.down_proj.weight.add_(
            0.05 * torch.randn_like(model.model.layers[2].mlp.down_proj.weight)
        )
    curve = error_growth(base, hidden_states(model, batch))
    assert curve[0] < 1e-6 and curve[1] < 1e-6
    assert curve[2] > 1e-3 and curve[3] > 1e-3


def test_base_precision_flags_dequantized_weights_and_not_fresh_floats(tokenizer):
    fresh = make_model(len(tokenizer), layers=2)
    assert not base_precision(fresh)["flagged"]
    dequantized = copy.deepcopy(fresh)
    quantize_(dequantized, RTNConfig(bits=4, group_size=32))
    report = base_precision(dequantized)
    assert report["flagged"] and report["grid_bits"] == 4
    assert any("Q4_0" in m for m in report["aligned_methods"])


def test_sensitivity_ranks_blocks_and_restores_the_model(tiny_model, tokenizer):
    """Block 0 is planted on the 2-bit grid already, so quantizing it again changes
    nothing; block 1 is not."""
    model = copy.deepcopy(tiny_model)
    config = RTNConfig(bits=2, group_size=32)
    quantize_(model, RTNConfig(bits=2, group_size=32, ignore=("lm_head", "model.layers.1.*")))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    master = MasterCopy(model)
    table = sensitivity(model, probe_batch(tokenizer, TEXTS), config, master, block_prefixes(model))
    kld = dict(zip(table["block"], table["kld"], strict=True))
    assert list(table["block"]) == ["model.layers.1", "model.layers.0"]
    assert kld["model.layers.0"] < 1e-6 < 1e-3 < kld["model.layers.1"]
    assert suggest_plan(table, keep=1) == {"model.layers.1.*": 8}
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("flagged", [False])
def test_diagnose_command(tiny_model_dir, tiny_suite, tmp_path, capsys, flagged):
    out = tmp_path / "diag"
    code = main(["diagnose", "--model", str(tiny_model_dir), "--suite", str(tiny_suite), "--bits", "4,2",
                 "--group-size", "32", "--keep", "1", "--threads", "1", "--out", str(out)])  # fmt: skip
    assert code == EXIT_OK
    assert (out / "plan.json").exists() and (out / "error_growth.png").exists()
    assert ("warning" in capsys.readouterr().out) is flagged
