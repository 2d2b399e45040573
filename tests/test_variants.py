"""Sweeps of methods x bits (skipping what a method does not support) and variant files."""

from __future__ import annotations

import pytest

from harness.errors import InputError
from harness.variants import load_variants, sweep


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
