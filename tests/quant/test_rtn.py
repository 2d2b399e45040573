"""Round-to-nearest: error versus bits, grids, ragged groups, size accounting."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from harness.errors import InputError
from harness.quant import config_from_dict, config_to_dict, make_config, quantize_, select_linears
from harness.quant.rtn import RTNConfig, fake_quantize


def rel_error(w: torch.Tensor, q: torch.Tensor) -> float:
    return float((w - q).detach().norm() / w.detach().norm())


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("group_size", [None, 32, 48])
def test_error_falls_as_bits_rise(symmetric, group_size):
    torch.manual_seed(0)
    w = torch.randn(64, 160)
    errors = [rel_error(w, fake_quantize(w, b, group_size, symmetric)) for b in range(2, 9)]
    assert all(a > b for a, b in zip(errors, errors[1:], strict=False)), errors
    assert errors[-1] < 0.01 and errors[0] > 0.2


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_each_group_uses_at_most_2_to_the_bits_values(bits):
    torch.manual_seed(1)
    w = torch.randn(8, 96)
    q = fake_quantize(w, bits, 32)
    for group in q.reshape(8, 3, 32).reshape(-1, 32):
        assert len(torch.unique(group)) <= 2**bits


def test_ragged_last_group_is_quantized_on_its_own():
    torch.manual_seed(2)
    w = torch.randn(4, 80)  # groups of 32: 32 + 32 + 16
    q = fake_quantize(w, 4, 32)
    assert torch.equal(q[:, 64:], fake_quantize(w[:, 64:], 4, None))
    assert torch.equal(q[:, :32], fake_quantize(w[:, :32], 4, None))


def test_asymmetric_grid_reproduces_values_already_on_it():
    scale, zero = 0.1, 3
    codes = torch.randint(0, 16, (4, 32)).float()
    codes[:, 0], codes[:, 1] = 0, 15  # span the whole grid in every row
    w = (codes - zero) * scale
    assert torch.allclose(fake_quantize(w, 4, 32), w, atol=1e-6)


def test_effective_bits_4bit_g128_asymmetric_is_4_25():
    model = nn.Sequential(nn.Linear(512, 256), nn.Linear(256, 128))
    report = quantize_(model, RTNConfig(bits=4, group_size=128, ignore=()))
    assert report.effective_bits == pytest.approx(4.25)
    n = 512 * 256 + 256 * 128
    assert report.n_weights == n
    assert report.packed_bytes == (4 * n + (n // 128) * 32) // 8
    assert report.simulated is True
    sym = quantize_(
        copy.deepcopy(model), RTNConfig(bits=4, group_size=128, symmetric=True, ignore=())
    )
    assert sym.effective_bits == pytest.approx(4.125)


def test_ragged_groups_are_counted_honestly():
    model = nn.Sequential(nn.Linear(576, 10))  # 576 = 4 x 128 + 64: five groups per row
    report = quantize_(model, RTNConfig(bits=4, group_size=128, ignore=()))
    assert report.effective_bits == pytest.approx(4 + 5 * 32 / 576)


def test_model_size_counts_unquantized_parameters_at_16_bits():
    model = nn.Sequential(nn.Linear(128, 64, bias=True))
    report = quantize_(model, RTNConfig(bits=8, group_size=None, ignore=()))
    codes_and_scales = (8 * 128 * 64 + 64 * 32) // 8
    assert report.packed_bytes == codes_and_scales
    assert report.model_bytes == codes_and_scales + 2 * 64  # the bias


def test_lm_head_and_tied_weights_are_left_alone(tiny_model):
    model = copy.deepcopy(tiny_model)
    head = model.lm_head.weight.clone()
    embed = model.get_input_embeddings().weight.clone()
    report = quantize_(model, RTNConfig(bits=2, group_size=32))
    assert torch.equal(model.lm_head.weight, head)
    assert torch.equal(model.get_input_embeddings().weight, embed)
    assert report.n_layers == 2 * 7  # q, k, v, o, gate, up, down per layer
    tied = nn.Module()
    tied.embed = nn.Embedding(10, 8)
    tied.head = nn.Linear(8, 10, bias=False)
    tied.head.weight = tied.embed.weight
    tied.get_input_embeddings = lambda: tied.embed
    assert select_linears(tied, ignore=()) == []


def test_quantized_model_output_degrades_with_fewer_bits(tiny_model, tokenizer):
    ids = torch.tensor(
        [tokenizer("bits and bytes and bits", add_special_tokens=False)["input_ids"]]
    )
    with torch.no_grad():
        reference = tiny_model(ids).logits
    errors = []
    for bits in (8, 4, 3, 2):
        model = copy.deepcopy(tiny_model)
        quantize_(model, RTNConfig(bits=bits, group_size=32))
        with torch.no_grad():
            errors.append(rel_error(reference, model(ids).logits))
    assert errors == sorted(errors) and errors[0] < 0.02


@pytest.mark.parametrize("bits", [0, 1, 9, 16])
def test_unsupported_bits_name_the_method_and_what_it_supports(bits):
    with pytest.raises(InputError, match=r"method 'rtn' supports bits 8, 7, 6, 5, 4, 3, 2"):
        make_config("rtn", bits=bits)


def test_unknown_method_and_option_errors():
    with pytest.raises(InputError, match=r"unknown quantization method 'rnt'; did you mean 'rtn'"):
        make_config("rnt", bits=4)
    with pytest.raises(InputError, match="has no option"):
        make_config("rtn", bits=4, colour="blue")


def test_config_round_trips_through_json_dict():
    config = RTNConfig(bits=3, group_size=64, symmetric=True)
    assert config_from_dict(config_to_dict(config)) == config
    assert config.variant_name == "rtn-w3g64-sym"
    assert RTNConfig(bits=4, group_size=None).variant_name == "rtn-w4"


def test_layer_bit_map_keeps_chosen_layers_at_higher_precision(tiny_model):
    model = copy.deepcopy(tiny_model)
    keep = "model.layers.0.*"
    config = RTNConfig(bits=2, group_size=32, layer_bits=((keep, 8),))
    report = quantize_(model, config)
    first = model.model.layers[0].mlp.up_proj.weight
    second = model.model.layers[1].mlp.up_proj.weight
    assert rel_error(tiny_model.model.layers[0].mlp.up_proj.weight, first) < 0.01
    assert rel_error(tiny_model.model.layers[1].mlp.up_proj.weight, second) > 0.2
    assert 2.0 < report.effective_bits < 8.0
    assert config.variant_name == "rtn-w2g32-mp1"
    assert config_from_dict(config_to_dict(config)) == config
    with pytest.raises(InputError, match="supports bits 8, 7, 6, 5, 4, 3, 2, not 12"):
        make_config("rtn", bits=4, layer_bits=(("x", 12),))


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_one_signed_groups_keep_their_spread(bits):
    """A group of values in [1, 2] (or [-2, -1]) must not collapse onto one value: the
    range is stretched to include 0, as the reference GPTQ quantizer does."""
    w = torch.linspace(1.0, 2.0, 32).repeat(3, 1)
    for sign in (1.0, -1.0):
        q = fake_quantize(sign * w, bits, 32)
        assert q.unique().numel() > 1
        step = 2.0 / (2**bits - 1)  # the grid spans [0, 2]: error at most half a step
        assert (q - sign * w).abs().max() <= step / 2 + 1e-6


def test_constant_and_one_wide_ragged_groups_are_reproduced():
    w = torch.full((2, 64), 0.37)
    assert torch.allclose(fake_quantize(w, 4, 32), w, atol=0.37 / 15)
    zeros = torch.zeros(2, 32)
    assert torch.equal(fake_quantize(zeros, 4, 32), zeros)
    ragged = torch.randn(3, 33)  # groups of 32 and a 1-wide tail
    q = fake_quantize(ragged, 4, 32)
    tail_step = ragged[:, 32].abs() / 15
    assert torch.all((q[:, 32] - ragged[:, 32]).abs() <= tail_step / 2 + 1e-6)
    assert torch.all(q[:, 32] != 0)
