"""Hugging Face checkpoints in a quantized format as variants.

A folder (or Hub id) whose ``config.json`` carries a ``quantization_config`` of a format
transformers loads on this machine: compressed-tensors (GPTQ, AWQ, W8A8, FP8 from
llm-compressor; decompressed to float on CPU), bitsandbytes (4/8-bit, evaluated packed
with its kernels) or torchao (its tensor subclasses). It is loaded beside the base model
(its own code never runs), scored with the base's reference head, and released after.
(hqq checkpoints are not: transformers 5 no longer loads them.)
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

from harness.errors import InputError
from harness.quant.artifacts import ArtifactInfo, content_hash, report
from harness.records import Artifact

# quant_method -> how its weights are evaluated on CPU
FORMATS = {
    "compressed-tensors": "float weights decompressed by compressed-tensors",
    "bitsandbytes": "packed",
    "torchao": "packed",
}
_FLOAT_DTYPES = ("F32", "F16", "BF16", "F64")


def folder(artifact: Artifact) -> Path:
    """The checkpoint's local folder: the path itself, or a Hub id's snapshot."""
    path = Path(artifact.source).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise InputError(f"variant model {artifact.source!r}: unsupported artifact format; "
                         "supported: a .gguf file, or a checkpoint folder or Hub id whose "
                         f"config.json has a quantization_config ({', '.join(FORMATS)})")  # fmt: skip
    if artifact.source.startswith((".", "/", "~")) or "/" not in artifact.source:
        raise InputError(f"variant model not found: {path}")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(artifact.source))
    except Exception as exc:  # offline, unknown id, no access: one line either way
        raise InputError(
            f"variant model {artifact.source!r}: cannot fetch it ({type(exc).__name__})"
        ) from None


def _config(path: Path) -> dict:
    try:
        return json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: no readable config.json ({exc})") from None


def _label(quant: dict) -> str:
    method = quant.get("quant_method")
    if method == "compressed-tensors":
        groups = list((quant.get("config_groups") or {}).values())
        weights = (groups[0].get("weights") or {}) if groups else {}
        inputs = (groups[0].get("input_activations") or {}) if groups else {}
        return f"w{weights.get('num_bits', '?')}a{inputs.get('num_bits', 16)}"
    if method == "bitsandbytes":
        return quant.get("bnb_4bit_quant_type", "nf4") if quant.get("load_in_4bit") else "int8"
    quant_type = quant.get("quant_type", method)  # torchao: its config, named in a dict
    if isinstance(quant_type, dict):
        quant_type = (quant_type.get("default") or {}).get("_type", "?")
    return str(quant_type)


def _stored(path: Path) -> tuple[Counter, Counter]:
    """Tensors and bytes per stored dtype, from the safetensors headers."""
    types, sizes = Counter(), Counter()
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise InputError(f"{path}: no safetensors weights (pickled weights are not loaded)")
    for file in files:
        with open(file, "rb") as f:
            header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
        for name, entry in header.items():
            if name != "__metadata__":
                types[entry["dtype"]] += 1
                sizes[entry["dtype"]] += entry["data_offsets"][1] - entry["data_offsets"][0]
    return types, sizes


def inspect(artifact: Artifact) -> ArtifactInfo:
    """Refuse a folder that is not a quantized checkpoint, or of a format not loaded here."""
    path = folder(artifact)
    config = _config(path)
    quant = config.get("quantization_config")
    if not isinstance(quant, dict):
        raise InputError(f"{path}: not a quantized checkpoint (config.json has no "
                         "quantization_config); pass it as --model, not as a variant")  # fmt: skip
    method = quant.get("quant_method")
    if method not in FORMATS:
        raise InputError(f"{path}: quantization format {method!r} is not supported "
                         f"(supported: gguf, {', '.join(FORMATS)})")  # fmt: skip
    if config.get("auto_map"):
        raise InputError(f"{path}: its config names custom code (auto_map), which is never run "
                         "for a variant")  # fmt: skip
    types, sizes = _stored(path)
    files = sorted(p for p in path.iterdir() if p.suffix in (".safetensors", ".json"))
    return ArtifactInfo(path, content_hash(files), method, _label(quant), dict(types), dict(sizes),
                        FORMATS[method])  # fmt: skip


def description(info: ArtifactInfo) -> tuple[dict, list[str] | None]:
    """The checkpoint's config and, when it ships a tokenizer, its vocabulary."""
    config = _config(info.path)
    config.setdefault("tie_word_embeddings", False)  # transformers' default when absent
    if not any(info.path.glob("tokenizer*")):
        return config, None
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(info.path, trust_remote_code=False)
    return config, tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))


def load(model, info: ArtifactInfo):
    """The checkpoint as its own model, on the base model's device and dtype."""
    from transformers import AutoModelForCausalLM

    start = time.perf_counter()
    device = next(model.parameters()).device
    try:
        loaded = AutoModelForCausalLM.from_pretrained(
            info.path, dtype=model.dtype, device_map={"": str(device)}, trust_remote_code=False
        ).eval()
    except (OSError, ValueError, ImportError, RuntimeError) as exc:
        raise InputError(f"{info.path}: transformers could not load it ({exc})") from None
    n_weights = sum(p.numel() for p in model.parameters())
    quantized = {t for t in info.tensor_types if t not in _FLOAT_DTYPES}
    return loaded, report(info, n_weights, quantized, time.perf_counter() - start)
