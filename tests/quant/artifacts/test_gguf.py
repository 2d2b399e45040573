"""GGUF files read tensor by tensor (k-quants included) and loaded into the base model."""

from __future__ import annotations

import pandas as pd
import torch

from harness.quant.artifacts import check_compatible, inspect_artifact, load_artifact
from harness.quant.master import MasterCopy
from harness.records import Artifact
from tests.artifacts import dequantized, q4_k_blocks, run_cli, write_gguf
from tests.conftest import make_model


def test_a_mixed_file_with_a_k_quant_is_read_tensor_by_tensor(tmp_path, tokenizer, tiny_suite):
    """down_proj at Q4_K (assembled from valid block bytes), attention at Q4_0, the
    rest at Q8_0: every loaded weight equals gguf-py's own dequantization, and the file
    runs as a variant paired with its base."""
    model = make_model(len(tokenizer), seed=4)
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**{**model.config.to_dict(), "intermediate_size": 256})
    model = LlamaForCausalLM(config).eval()
    names = {f"blk.{i}.ffn_down.weight": "Q4_K" for i in range(2)}
    names |= {f"blk.{i}.attn_{x}.weight": "Q4_0" for i in range(2) for x in "qkv"}
    raw = {
        n: q4_k_blocks(64, 256, seed=i)
        for i, n in enumerate(n for n, t in names.items() if t == "Q4_K")
    }
    path = write_gguf(model, tokenizer, tmp_path / "mixed.gguf", "Q8_0", types=names, raw=raw)
    info = inspect_artifact(Artifact(str(path)))
    assert info.tensor_types == {"Q4_K": 2, "Q4_0": 6, "Q8_0": 8, "F32": 5}
    assert info.type_bytes["Q4_K"] == 2 * 64 * 256 // 256 * 144
    master = MasterCopy(model)
    check_compatible(info, model, tokenizer)
    _, report = load_artifact(model, info)
    assert report.method.startswith("gguf:") and 4.5 < report.effective_bits < 9
    for i in range(2):
        down = model.model.layers[i].mlp.down_proj.weight
        assert torch.equal(down, dequantized(path, f"blk.{i}.ffn_down.weight"))
    master.restore()
    model.save_pretrained(tmp_path / "base")
    tokenizer.save_pretrained(tmp_path / "base")
    code, _ = run_cli(["--model", str(tmp_path / "base"), "--suite", str(tiny_suite), "--variant-models", str(path)],
                  tmp_path / "run")  # fmt: skip
    items = pd.read_parquet(tmp_path / "run" / "items.parquet")
    assert code in (0, 1) and set(items["variant"]) == {"baseline", "mixed"}
    assert items[items["variant"] == "mixed"]["kld"].notna().all()
