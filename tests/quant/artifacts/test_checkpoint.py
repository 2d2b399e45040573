"""Hugging Face checkpoints in quantized formats as variants: a compressed-tensors
checkpoint made with the compressed-tensors library and a bitsandbytes 4-bit one saved
by transformers, both of the tiny test model, loaded and paired with the base."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
import torch

from harness.cli import EXIT_USAGE, main


def compressed_tensors_checkpoint(base_dir, out):
    """W4A16 (int4 weights, groups of 32, symmetric) packed by compressed-tensors, the
    format llm-compressor writes; scales from each group's min/max."""
    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.quantization import (
        QuantizationArgs,
        QuantizationConfig,
        QuantizationScheme,
        apply_quantization_config,
    )
    from compressed_tensors.quantization.utils import calculate_qparams
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_dir)
    args = QuantizationArgs(num_bits=4, type="int", symmetric=True, strategy="group", group_size=32)
    scheme = QuantizationScheme(targets=["Linear"], weights=args)
    apply_quantization_config(
        model, QuantizationConfig(config_groups={"group_0": scheme}, ignore=["lm_head"])
    )
    with torch.no_grad():
        for module in model.modules():
            if hasattr(module, "weight_scale"):
                groups = module.weight.reshape(module.weight.shape[0], -1, 32)
                scale, _ = calculate_qparams(groups.amin(-1), groups.amax(-1), args)
                module.weight_scale.copy_(scale.reshape(module.weight_scale.shape))
    compressor = ModelCompressor.from_pretrained_model(model, "pack-quantized")
    compressor.compress_model(model)
    model.save_pretrained(out)
    compressor.update_config(out)
    return out


def bnb_checkpoint(base_dir, out):
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    config = BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32
    )
    AutoModelForCausalLM.from_pretrained(
        base_dir, quantization_config=config, device_map="cpu"
    ).save_pretrained(out)
    return out


def torchao_checkpoint(base_dir, out):
    from torchao.quantization import Int8WeightOnlyConfig
    from transformers import AutoModelForCausalLM, TorchAoConfig

    config = TorchAoConfig(Int8WeightOnlyConfig())
    AutoModelForCausalLM.from_pretrained(
        base_dir, quantization_config=config, device_map="cpu"
    ).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def checkpoints(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("checkpoints")
    return {"ct": compressed_tensors_checkpoint(tiny_model_dir, root / "tiny-w4a16"),
            "bnb": bnb_checkpoint(tiny_model_dir, root / "tiny-nf4"),
            "torchao": torchao_checkpoint(tiny_model_dir, root / "tiny-int8")}  # fmt: skip


def run(model, suite, out, *variant_models):
    return main(["run", "--model", str(model), "--suite", str(suite), "--out", str(out), "--threads", "1",
                 "--no-progress", "--variant-models", ",".join(map(str, variant_models))])  # fmt: skip


def test_checkpoints_load_as_variants_and_pair_with_the_base(
    checkpoints, tiny_model_dir, tiny_suite, tmp_path
):
    out = tmp_path / "run"
    assert run(tiny_model_dir, tiny_suite, out, *checkpoints.values()) in (0, 1)
    items = pd.read_parquet(out / "items.parquet")
    assert set(items["variant"]) == {"baseline", "tiny-w4a16", "tiny-nf4", "tiny-int8"}
    base = items[items["variant"] == "baseline"].set_index(["task", "item_id"])
    for name, low, high in [
        ("tiny-w4a16", 1e-3, 10),
        ("tiny-nf4", 1e-3, 10),
        ("tiny-int8", 1e-7, 1e-3),
    ]:
        rows = items[items["variant"] == name].set_index(["task", "item_id"])
        assert rows.index.equals(base.index)  # exactly the baseline's items
        assert rows["kld"].notna().all() and low < rows["kld"].mean() < high, (
            name
        )  # 8 bits: near-free
    manifest = json.loads((out / "manifest.json").read_text())["variants"]
    ct, bnb = manifest["tiny-w4a16"], manifest["tiny-nf4"]
    assert ct["method"] == "compressed-tensors:w4a16"
    assert bnb["method"] == "bitsandbytes:nf4" and not bnb["simulated"] and ct["simulated"]
    stored = sum(p.stat().st_size for p in checkpoints["bnb"].glob("*.safetensors"))
    assert (
        bnb["model_bytes"] <= stored and bnb["model_bytes"] > 0.9 * stored
    )  # the header is the rest
    n = manifest["baseline"]["model_bytes"] / 2  # 16-bit bytes -> parameters
    assert bnb["effective_bits"] == pytest.approx(8 * bnb["model_bytes"] / n, rel=1e-3)
    assert "I32" in ct["tensor_types"] and "U8" in bnb["tensor_types"]
    assert manifest["tiny-int8"]["method"] == "torchao:Int8WeightOnlyConfig"


def test_bad_checkpoints_are_one_line_errors(
    checkpoints, tiny_model_dir, tiny_suite, tmp_path, capsys
):
    plain = tiny_model_dir
    other = tmp_path / "awq"
    shutil.copytree(checkpoints["ct"], other)
    config = json.loads((other / "config.json").read_text())
    config["quantization_config"]["quant_method"] = "awq"
    (other / "config.json").write_text(json.dumps(config))
    custom = tmp_path / "custom"
    shutil.copytree(checkpoints["bnb"], custom)
    config = json.loads((custom / "config.json").read_text())
    (custom / "config.json").write_text(
        json.dumps({**config, "auto_map": {"AutoModelForCausalLM": "m.Model"}})
    )
    wide = tmp_path / "wide"
    shutil.copytree(checkpoints["bnb"], wide)
    (wide / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 3}))
    cases = {plain: "not a quantized checkpoint", other: "quantization format 'awq' is not supported",
             custom: "custom code", wide: "num_hidden_layers is 3 in the artifact but 2"}  # fmt: skip
    for path, message in cases.items():
        out = tmp_path / f"out-{path.name}"
        assert run(tiny_model_dir, tiny_suite, out, path) == EXIT_USAGE
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert message in err, err
        assert not out.exists()
