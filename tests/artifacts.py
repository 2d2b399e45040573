"""Small real artifacts built in-process for the artifact tests: GGUF files of a tiny
Llama written with gguf-py, the way llama.cpp's converter lays them out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def _permute(weights: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's converter reorders Q and K rows for its rotary layout."""
    return (
        weights.reshape(heads, 2, weights.shape[0] // heads // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def gguf_names(model) -> dict[str, str]:
    """HF parameter name -> GGUF tensor name, from transformers' own map."""
    from transformers.modeling_gguf_pytorch_utils import TensorProcessor, get_gguf_hf_weights_map

    mapping = get_gguf_hf_weights_map(model, TensorProcessor())
    return {hf: gguf for gguf, hf in mapping.items()}


def write_gguf(model, tokenizer, path: Path, qtype: str = "Q8_0", types: dict[str, str] | None = None,
               raw: dict[str, np.ndarray] | None = None) -> Path:  # fmt: skip
    """Write ``model`` as a llama GGUF: every 2-D weight at ``qtype`` (or ``types[gguf
    name]``), norms at F32, and ``raw[gguf name]`` as ready-made block bytes."""
    import gguf

    config = model.config
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(float(config.rope_parameters["rope_theta"]))
    writer.add_vocab_size(config.vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer)))))
    names = gguf_names(model)
    for hf_name, tensor in model.state_dict().items():
        if hf_name not in names or (hf_name == "lm_head.weight" and config.tie_word_embeddings):
            continue  # a tied head is the embedding: llama.cpp writes no output.weight
        name = names[hf_name]
        data = tensor.detach().float().numpy()
        if name.endswith("attn_q.weight"):
            data = _permute(data, config.num_attention_heads)
        elif name.endswith("attn_k.weight"):
            data = _permute(data, config.num_key_value_heads)
        if raw and name in raw:
            kind = gguf.GGMLQuantizationType[(types or {})[name]]
            writer.add_tensor(name, raw[name], raw_dtype=kind)
            continue
        kind = gguf.GGMLQuantizationType[
            (types or {}).get(name, qtype if data.ndim == 2 else "F32")
        ]
        packed = gguf.quants.quantize(data, kind)
        writer.add_tensor(name, packed, raw_dtype=kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def q4_k_blocks(rows: int, cols: int, seed: int = 0) -> np.ndarray:
    """Valid Q4_K bytes for a ``rows x cols`` tensor (cols a multiple of 256): random
    codes and sub-block scales, small positive super-block scales."""
    import gguf

    block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q4_K]
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, size=(rows * cols // block, size), dtype=np.uint8)
    scales = np.array([0.002, 0.001], dtype=np.float16).view(np.uint8)  # d, dmin
    blocks[:, :4] = scales
    return blocks.reshape(rows, cols // block * size)


def dequantized(model_path: Path, name: str) -> torch.Tensor:
    """gguf-py's own dequantization of one tensor of a GGUF file (the reference)."""
    import gguf

    reader = gguf.GGUFReader(str(model_path))
    tensor = next(t for t in reader.tensors if t.name == name)
    return torch.from_numpy(np.array(gguf.quants.dequantize(tensor.data, tensor.tensor_type)))


def run_cli(args, out, capsys=None):
    """``qharness run`` with ARGS into OUT at one thread: (exit code, stderr)."""
    from harness.cli import main

    code = main(["run", *args, "--out", str(out), "--threads", "1", "--no-progress"])
    return code, (capsys.readouterr().err if capsys else "")
