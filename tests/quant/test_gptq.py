"""GPTQ against independent computations: the plain OBQ update rule, RTN when the
inputs are uncorrelated, and its own objective (the layer's output error)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from harness.errors import InputError
from harness.quant import make_config, quantize_
from harness.quant.gptq import GPTQ
from harness.quant.rtn import fake_quantize, grid, round_to_grid
from tests.conftest import held_out_error


def layer_and_inputs(rows=24, cols=48, n=400, seed=0):
    torch.manual_seed(seed)
    layer = nn.Linear(cols, rows, bias=False)
    mixing = torch.randn(cols, cols) / cols**0.5 + torch.eye(cols)  # correlated inputs
    return layer, torch.randn(n, cols) @ mixing


def solver_for(layer, inputs) -> GPTQ:
    solver = GPTQ(layer)
    for chunk in inputs.split(128):  # running average over batches
        solver.add_batch(chunk)
    return solver


def plain_obq(weight, hessian, bits, damp):
    """Column by column with the explicit inverse-Hessian downdate of Optimal Brain
    Quantization, in float64, one grid per row fixed from the original weights."""
    w = weight.double().clone()
    h = hessian.double() + damp * torch.diag(hessian).mean().double() * torch.eye(len(hessian))
    h_inv = torch.linalg.inv(h)
    scale, zero = grid(w, bits, False)
    q = torch.zeros_like(w)
    for i in range(w.shape[1]):
        q[:, i] = round_to_grid(w[:, i : i + 1], scale, zero, bits, False).flatten()
        err = (w[:, i] - q[:, i]) / h_inv[i, i]
        w[:, i:] -= err[:, None] * h_inv[i, i:][None, :]
        h_inv -= h_inv[:, i : i + 1] @ h_inv[i : i + 1, :] / h_inv[i, i]
    return q.float()


def output_error(layer, inputs, weight) -> float:
    return float((inputs @ (layer.weight - weight).T).pow(2).mean())


def test_hessian_is_the_average_of_2_x_xt():
    layer, inputs = layer_and_inputs()
    solver = solver_for(layer, inputs)
    assert torch.allclose(solver.hessian, 2 * inputs.T @ inputs / len(inputs), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("act_order", [False, True])
@pytest.mark.parametrize("bits", [2, 3, 4])
def test_matches_the_plain_obq_update_rule(bits, act_order):
    """In act-order, the plain rule runs on the columns sorted by falling Hessian
    diagonal (the grid per row is fixed from the original weights either way)."""
    layer, inputs = layer_and_inputs(seed=bits)
    solver = solver_for(layer, inputs)
    weight, hessian = layer.weight.detach(), solver.hessian
    order = torch.argsort(torch.diag(hessian), descending=True) if act_order else torch.arange(48)
    expected = plain_obq(weight[:, order], hessian[order][:, order], bits, damp=0.01)
    expected = expected[:, torch.argsort(order)]
    got = solver.quantize(
        make_config("gptq", bits=bits, group_size=None, block_size=16, act_order=act_order)
    )
    same = torch.isclose(got, expected, atol=1e-5).float().mean()
    assert same > 0.99  # float32 vs float64: a rare tie may round the other way
    assert output_error(layer, inputs, got) == pytest.approx(
        output_error(layer, inputs, expected), rel=0.05
    )


@pytest.mark.parametrize("group_size", [None, 16, 20])
def test_uncorrelated_inputs_reduce_gptq_to_round_to_nearest(group_size):
    torch.manual_seed(3)
    layer = nn.Linear(40, 12, bias=False)
    solver = GPTQ(layer)
    solver.add_batch(torch.eye(40) * (40 / 2) ** 0.5)  # H = I: no error to feed forward
    got = solver.quantize(make_config("gptq", bits=3, group_size=group_size))
    assert torch.allclose(got, fake_quantize(layer.weight.detach(), 3, group_size), atol=1e-6)


@pytest.mark.parametrize("act_order", [False, True])
@pytest.mark.parametrize("bits", [2, 3, 4])
def test_output_error_is_lower_than_round_to_nearest(bits, act_order):
    layer, inputs = layer_and_inputs(seed=10 + bits)
    config = make_config("gptq", bits=bits, group_size=16, act_order=act_order)
    got = solver_for(layer, inputs).quantize(config)
    rtn = fake_quantize(layer.weight.detach(), bits, 16)
    assert output_error(layer, inputs, got) < 0.9 * output_error(layer, inputs, rtn)


def test_act_order_keeps_each_original_group_on_one_grid():
    layer, inputs = layer_and_inputs(seed=4)
    got = solver_for(layer, inputs).quantize(
        make_config("gptq", bits=2, group_size=16, act_order=True)
    )
    for group in got.reshape(24, 3, 16).reshape(-1, 16):
        assert len(torch.unique(group)) <= 4


def test_sequential_gptq_beats_rtn_on_a_tiny_decoder(tiny_model):
    assert held_out_error(tiny_model, "gptq")[0] < held_out_error(tiny_model, "rtn")[0]


def test_gptq_needs_calibration(tiny_model):
    with pytest.raises(InputError, match="needs calibration data"):
        quantize_(copy.deepcopy(tiny_model), make_config("gptq", bits=4))
