"""Every quantization method on a tiny model: output shape and dtype, error falls as bits
rise, unsupported bits are refused clearly, size accounting, and restoring the weights."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from harness.errors import InputError
from harness.quant import (
    METHODS,
    config_from_dict,
    config_to_dict,
    make_config,
    quantize_,
)
from tests.quant.methods import SWEEPS, UNSUPPORTED, fit, logits, rel_error


def test_every_method_is_registered():
    assert set(SWEEPS) <= set(METHODS.names())


@pytest.mark.parametrize("method", SWEEPS)
def test_output_keeps_shape_and_dtype_and_error_falls_with_bits(method, tiny_model, calib, probe):
    reference = logits(tiny_model, probe)
    errors = []
    for bits in SWEEPS[method]:
        model = copy.deepcopy(tiny_model)
        report = quantize_(model, make_config(method, bits=bits, **fit(method)), calib)
        out = logits(model, probe)
        assert out.shape == reference.shape and out.dtype == reference.dtype
        assert torch.isfinite(out).all()
        assert report.n_layers == 14 and report.seconds >= 0
        errors.append(rel_error(reference, out))
    assert errors == sorted(errors, reverse=True), errors
    assert errors[-1] < 0.05, errors  # 8 bits is close to free


@pytest.mark.parametrize("method", SWEEPS)
def test_unsupported_bits_name_the_method_and_its_bits(method):
    bits = UNSUPPORTED[method]
    supported = ", ".join(map(str, METHODS.get(method).supported_bits))
    with pytest.raises(
        InputError, match=rf"method '{method}' supports bits {supported}, not {bits}"
    ):
        make_config(method, bits=bits)


@pytest.mark.parametrize(
    "method,options,bits_per_weight",
    [
        ("hqq", {"bits": 4, "group_size": 32}, 4 + 32 / 32),
        ("hqq", {"bits": 8, "group_size": 64}, 8 + 32 / 64),
        ("hqq", {"bits": 2, "group_size": 64}, 2 + 32 / 64),
        ("bnb", {"bits": 4}, 4 + 32 / 64),  # nf4: one float32 absmax per 64
        ("bnb", {"bits": 4, "format": "fp4", "blocksize": 128}, 4 + 32 / 128),
        ("gguf", {"bits": 8}, 34 * 8 / 32),  # Q8_0: 32 codes + fp16 scale per 34 bytes
        ("gguf", {"bits": 4}, 18 * 8 / 32),  # Q4_0
        ("gguf", {"bits": 4, "qtype": "Q4_1"}, 20 * 8 / 32),
        ("gguf", {"bits": 5, "qtype": "Q5_1"}, 24 * 8 / 32),
        (
            "torchao",
            {"bits": 4, "group_size": 64},
            8 + (32 + 8) / 64,
        ),  # int8 codes, fp32 scale, int8 zero
    ],
)
def test_size_accounting(method, options, bits_per_weight, calib):
    model = nn.Sequential(nn.Linear(128, 64), nn.Linear(64, 128))
    report = quantize_(model, make_config(method, ignore=(), **options), calib)
    n = 2 * 128 * 64
    assert report.n_weights == n
    assert report.effective_bits == pytest.approx(bits_per_weight)
    assert report.packed_bytes == pytest.approx(n * bits_per_weight / 8, abs=1)
    assert report.model_bytes == report.packed_bytes + 2 * (64 + 128)  # biases at 16 bits
    assert report.note


@pytest.mark.parametrize("symmetric", [False, True])
def test_gptq_size_accounting_on_a_decoder(symmetric, tiny_model, calib):
    model = copy.deepcopy(tiny_model)
    config = make_config("gptq", bits=3, group_size=32, symmetric=symmetric)
    report = quantize_(model, config, calib)
    n = sum(m.weight.numel() for name, m in tiny_model.named_modules() if name.endswith("_proj"))
    assert report.n_weights == n
    assert report.effective_bits == pytest.approx(3 + (16 if symmetric else 32) / 32)
    others = sum(p.numel() for p in tiny_model.parameters()) - n  # embeddings, head, norms
    assert report.model_bytes == report.packed_bytes + 2 * others


def test_packed_and_simulated_methods_say_which(tiny_model, calib):
    simulated = {}
    for method in SWEEPS:
        config = make_config(method, bits=8, **fit(method))
        simulated[method] = quantize_(copy.deepcopy(tiny_model), config, calib).simulated
    assert simulated == {"rtn": True, "gptq": True, "awq": True, "gguf": True,
                         "hqq": False, "bnb": False, "torchao": False}  # fmt: skip


@pytest.mark.parametrize(
    "method,options,name",
    [
        ("gptq", {"bits": 4}, "gptq-w4g128"),
        (
            "gptq",
            {"bits": 3, "group_size": 64, "symmetric": True, "act_order": True},
            "gptq-w3g64-sym",
        ),
        ("hqq", {"bits": 2}, "hqq-w2g64"),
        ("bnb", {"bits": 4}, "bnb-w4g64"),
        ("bnb", {"bits": 4, "format": "fp4"}, "bnb-w4g64-fp4"),
        ("gguf", {"bits": 8}, "gguf-w8g32"),
        ("gguf", {"bits": 4, "qtype": "Q4_1"}, "gguf-w4g32-q4_1"),
        ("torchao", {"bits": 8, "group_size": None}, "torchao-w8"),
        ("torchao", {"bits": 8, "group_size": None, "activations": "int8"}, "torchao-w8a8"),
        ("torchao", {"bits": 8, "group_size": None, "activations": "fp8"}, "torchao-w8a8-fp8"),
        ("awq", {"bits": 4, "group_size": 64, "symmetric": True}, "awq-w4g64-sym"),
    ],
)
def test_variant_names_and_json_round_trip(method, options, name):
    config = make_config(method, **options)
    assert config.variant_name == name
    assert config_from_dict(config_to_dict(config)) == config


@pytest.mark.parametrize(
    "method,options,message",
    [
        ("gguf", {"bits": 4, "qtype": "Q8_0"}, "qtype 'Q8_0' is not a 4-bit format"),
        ("bnb", {"bits": 8, "format": "nf4"}, "format 'nf4' is not a 8-bit format"),
        ("hqq", {"bits": 4, "group_size": 12}, "group_size must be a multiple of 8"),
        ("torchao", {"bits": 4, "group_size": None}, "per-row scales"),
        ("gptq", {"bits": 4, "damp": 2.0}, "damp must lie in"),
        ("torchao", {"bits": 4, "group_size": 32, "activations": "int8"}, "8-bit weights"),
        ("torchao", {"bits": 8, "group_size": None, "activations": "int4"}, "int8 or fp8"),
    ],
)
def test_bad_options_are_refused(method, options, message):
    with pytest.raises(InputError, match=message):
        make_config(method, **options)


def test_group_sizes_that_do_not_divide_the_rows_are_refused_where_the_library_needs_it():
    for method in ("hqq", "torchao"):
        model = nn.Sequential(nn.Linear(96, 8))
        with pytest.raises(InputError, match="does not divide"):
            quantize_(model, make_config(method, bits=4, group_size=64, ignore=()))
    model = nn.Sequential(nn.Linear(48, 8))
    with pytest.raises(InputError, match="not a multiple of the 32-weight blocks"):
        quantize_(model, make_config("gguf", bits=4, ignore=()))
