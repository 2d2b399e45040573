"""Sweeps of methods x bits (skipping what a method does not support) and variant files."""

from __future__ import annotations

import pytest

from harness.errors import InputError
from harness.quant.variants import load_variants, sweep, with_kv_cache


def test_sweep_skips_unsupported_bits_and_says_so():
    variants, skipped = sweep(["rtn", "bnb", "gguf"], [8, 4, 3], {})
    assert [v.name for v in variants] == [
        "rtn-w8g128", "rtn-w4g128", "rtn-w3g128", "bnb-w8", "bnb-w4g64", "gguf-w8g32", "gguf-w4g32",
    ]  # fmt: skip
    assert skipped == [
        "bnb at 3 bits: not supported (supports 8, 4)",
        "gguf at 3 bits: not supported (supports 8, 5, 4)",
    ]


def test_sweep_errors():
    with pytest.raises(InputError, match="no chosen method supports 3 bits"):
        sweep(["bnb"], [4, 3], {})
    with pytest.raises(InputError, match="did you mean 'hqq'"):
        sweep(["hqg"], [4], {})
    with pytest.raises(InputError, match="method 'bnb' has no option"):
        sweep(["rtn", "bnb"], [4], {"group_size": 64})


def test_variants_file(tmp_path):
    path = tmp_path / "variants.yaml"
    path.write_text(
        "- {method: gptq, bits: 4, group_size: 64, act_order: true}\n"
        "- {method: gguf, bits: 4, qtype: Q4_1}\n"
        "- {method: rtn, bits: 2, layer_bits: [['model.layers.0.*', 8]]}\n",
        encoding="utf-8",
    )
    variants = load_variants(path)
    assert [v.name for v in variants] == ["gptq-w4g64", "gguf-w4g32-q4_1", "rtn-w2g128-mp1"]
    assert variants[2].config.layer_bits == (("model.layers.0.*", 8),)


@pytest.mark.parametrize(
    "content,message",
    [
        (
            "- {method: rtn, bits: 4}\n- {method: rtn, bits: 4}\n",
            "entry 2: variant 'rtn-w4g128' is listed twice",
        ),
        ("- {bits: 4}\n", "entry 1 must be a mapping with a 'method', 'model' or 'kv_bits' key"),
        ("- {method: hqq, bits: 7}\n", "entry 1: method 'hqq' supports bits"),
        (
            "- {method: rtn, bits: 4, colour: red}\n",
            "entry 1: method 'rtn' has no option(s) colour",
        ),
        ("{}\n", "expected a non-empty list"),
        ("- [unclosed\n", "variants.yaml:2: not valid YAML"),
    ],
)
def test_bad_variant_files_name_the_file_and_entry(tmp_path, content, message):
    path = tmp_path / "variants.yaml"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_variants(path)


def test_kv_bits_cross_every_variant_and_the_base_weights():
    variants, _ = sweep(["rtn"], [8, 4], {})
    crossed = with_kv_cache(variants, [4, 2])
    assert [v.name for v in crossed] == [
        "rtn-w8g128", "rtn-w4g128", "kv4", "rtn-w8g128-kv4", "rtn-w4g128-kv4",
        "kv2", "rtn-w8g128-kv2", "rtn-w4g128-kv2",
    ]  # fmt: skip
    kv4 = crossed[2]
    assert kv4.config is None and kv4.artifact is None and kv4.kv_bits == 4
    assert not kv4.is_baseline
    assert crossed[3].config == variants[0].config and crossed[3].kv_bits == 4
    with pytest.raises(InputError, match="--kv-bits: kv_bits must be one of 8, 4, 2, not 3"):
        with_kv_cache(variants, [3])
    with pytest.raises(InputError, match="--kv-bits: variant 'kv4' is listed twice"):
        with_kv_cache(crossed[:3], [4])  # a variants file's {kv_bits: 4} and --kv-bits 4


def test_variants_file_with_kv_bits(tmp_path):
    path = tmp_path / "variants.yaml"
    path.write_text(
        "- {kv_bits: 8}\n"
        "- {method: rtn, bits: 4, kv_bits: 4}\n"
        "- {model: shipped.gguf, kv_bits: 2}\n",
        encoding="utf-8",
    )
    variants = load_variants(path)
    assert [(v.name, v.kv_bits) for v in variants] == [
        ("kv8", 8), ("rtn-w4g128-kv4", 4), ("shipped-kv2", 2),
    ]  # fmt: skip
    for content, message in [("- {kv_bits: 5}\n", "entry 1: kv_bits must be one of 8, 4, 2"),
                             ("- {kv_bits: 4, bits: 4}\n", "entry 1: unknown key 'bits' without")]:  # fmt: skip
        path.write_text(content, encoding="utf-8")
        with pytest.raises(InputError, match=message):
            load_variants(path)
