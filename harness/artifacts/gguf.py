"""Pre-quantized artifacts as variants: the file a team ships, scored against its base.

A GGUF file (llama.cpp's formats: every type gguf-py can dequantize, a file of mixed
types read tensor by tensor) is first checked against the base model without reading
its tensors — architecture, shapes, vocabulary, that it is quantized at all — and then
its dequantized weights are written into the base model in place, tensor by tensor (the
float weights come back from the master copy afterwards). So it is scored on exactly
the baseline's prepared requests and paired item by item like a method variant. Its
size is the file's own: bytes per tensor type.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from harness.errors import InputError
from harness.records import Artifact, QuantReport

FORMATS = ("gguf",)
_FLOAT_TYPES = ("F32", "F16", "BF16")
# base config keys an artifact must share (transformers' names, from the GGUF header)
_SHAPE_KEYS = ("hidden_size", "num_hidden_layers", "intermediate_size", "num_attention_heads",
               "num_key_value_heads", "vocab_size", "tie_word_embeddings")  # fmt: skip


@dataclass(frozen=True)
class ArtifactInfo:
    """What the header says: content hash, format label and size per tensor type."""

    path: Path
    sha256: str
    label: str  # e.g. "Q4_K_M" (the file type), else the commonest quantized type
    tensor_types: dict[str, int]  # type name -> number of tensors
    type_bytes: dict[str, int]  # type name -> bytes
    n_bytes: int
    n_weights: int

    @property
    def method(self) -> str:
        return f"gguf:{self.label}"

    @property
    def effective_bits(self) -> float:
        return 8 * self.n_bytes / self.n_weights

    def record(self) -> dict:
        """What ties stored rows to this artifact: its content, not its path."""
        return {"format": "gguf", "sha256": self.sha256}


def gguf_path(artifact: Artifact) -> Path:
    """The artifact's GGUF file (``source`` itself, or ``gguf_file`` inside it)."""
    path = Path(artifact.source).expanduser()
    if artifact.gguf_file:
        path = path / artifact.gguf_file
    if path.suffix != ".gguf":
        raise InputError(f"variant model {artifact.source!r}: unsupported artifact format; "
                         f"supported: a .gguf file (or a folder with gguf_file:)")  # fmt: skip
    if not path.is_file():
        raise InputError(f"variant model not found: {path}")
    return path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def inspect_artifact(artifact: Artifact) -> ArtifactInfo:
    """Read the GGUF header: refuse a file that is not GGUF, holds a type gguf-py cannot
    dequantize, or holds no quantized tensor at all."""
    import gguf

    path = gguf_path(artifact)
    try:
        reader = gguf.GGUFReader(str(path))
    except (ValueError, OSError) as exc:
        raise InputError(f"{path}: not a readable GGUF file ({exc})") from None
    types, sizes, n_weights = Counter(), Counter(), 0
    for tensor in reader.tensors:
        kind = tensor.tensor_type
        if kind.name not in _FLOAT_TYPES and kind not in gguf.quants._type_traits:
            known = sorted(t.name for t in gguf.quants._type_traits)
            raise InputError(f"{path}: tensor {tensor.name} has type {kind.name}, which gguf-py "
                             f"cannot dequantize (supported: {', '.join(known)})")  # fmt: skip
        types[kind.name] += 1
        sizes[kind.name] += int(tensor.n_bytes)
        n_weights += int(tensor.n_elements)
    quantized = {t: n for t, n in types.items() if t not in _FLOAT_TYPES}
    if not quantized:
        raise InputError(f"{path}: holds no quantized tensor ({', '.join(types)} only); "
                         "pass the base model as --model, not as a variant")  # fmt: skip
    return ArtifactInfo(path, _sha256(path), _label(reader, quantized), dict(types),
                        dict(sizes), sum(sizes.values()), n_weights)  # fmt: skip


def _label(reader, quantized: dict[str, int]) -> str:
    import gguf

    field = reader.fields.get("general.file_type")
    if field is not None:
        try:
            name = gguf.LlamaFileType(int(field.parts[field.data[0]][0])).name
            return name.removeprefix("MOSTLY_")
        except ValueError:
            pass
    return max(quantized, key=quantized.get)


def _gguf_config(path: Path) -> dict:
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    try:
        return load_gguf_checkpoint(str(path), return_tensors=False)
    except (ValueError, KeyError) as exc:
        raise InputError(f"{path}: transformers cannot read this GGUF ({exc})") from None


def check_compatible(info: ArtifactInfo, model, tokenizer) -> None:
    """Refuse an artifact that is not a quantized copy of the base model, naming the
    difference: architecture, shapes, or vocabulary."""
    parsed = _gguf_config(info.path)
    config, base = parsed["config"], model.config
    if config.get("model_type") != base.model_type:
        raise InputError(f"{info.path}: architecture {config.get('model_type')!r} does not match "
                         f"the base model's {base.model_type!r}")  # fmt: skip
    for key in _SHAPE_KEYS:
        if key in config and config[key] != getattr(base, key, None):
            raise InputError(f"{info.path}: {key} is {config[key]} in the artifact but "
                             f"{getattr(base, key, None)} in the base model")  # fmt: skip
    tokens = parsed["tokenizer"].get("tokens")
    if tokens is not None:
        ours = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
        if len(tokens) != len(ours):
            raise InputError(f"{info.path}: its vocabulary has {len(tokens)} tokens, the base "
                             f"tokenizer's {len(ours)}")  # fmt: skip
        for i, (theirs, mine) in enumerate(zip(tokens, ours, strict=True)):
            if theirs != mine:
                raise InputError(f"{info.path}: token {i} is {theirs!r} in the artifact but "
                                 f"{mine!r} in the base tokenizer")  # fmt: skip


@torch.no_grad()
def load_artifact(model, info: ArtifactInfo) -> QuantReport:
    """Write the artifact's dequantized weights into ``model`` (the base, checked by
    :func:`check_compatible`), one tensor at a time; every parameter must be covered."""
    import gguf
    from transformers.modeling_gguf_pytorch_utils import (
        TENSOR_PROCESSORS,
        TensorProcessor,
        get_gguf_hf_weights_map,
    )

    start = time.perf_counter()
    parsed = _gguf_config(info.path)
    architecture = gguf.GGUFReader(str(info.path)).fields["general.architecture"]
    architecture = bytes(architecture.parts[architecture.data[0]]).decode()
    processor = TENSOR_PROCESSORS.get(architecture, TensorProcessor)(config=parsed["config"])
    names = get_gguf_hf_weights_map(model, processor)
    params = dict(model.named_parameters())
    loaded = set()
    for tensor in gguf.GGUFReader(str(info.path)).tensors:
        weights = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
        result = processor.process(weights=weights, name=tensor.name, tensor_key_mapping=names,
                                   parsed_parameters=parsed)  # fmt: skip
        if result.name not in names or names[result.name] not in params:
            continue
        name, param = names[result.name], params[names[result.name]]
        values = torch.from_numpy(np.ascontiguousarray(result.weights))
        if tuple(values.shape) != tuple(param.shape):
            raise InputError(f"{info.path}: tensor {tensor.name} has shape {tuple(values.shape)}, "
                             f"the base's {name} {tuple(param.shape)}")  # fmt: skip
        param.copy_(values.to(param.dtype))
        loaded.add(name)
    missing = sorted(set(params) - loaded)
    if missing:
        raise InputError(f"{info.path}: no tensor for {', '.join(missing[:3])}"
                         f"{' …' if len(missing) > 3 else ''}")  # fmt: skip
    mix = ", ".join(f"{t} ×{n}" for t, n in sorted(info.tensor_types.items(), key=lambda x: -x[1]))
    quantized = {t: b for t, b in info.type_bytes.items() if t not in _FLOAT_TYPES}
    return QuantReport(
        method=info.method, bits=round(info.effective_bits), n_layers=sum(
            n for t, n in info.tensor_types.items() if t not in _FLOAT_TYPES),
        n_weights=info.n_weights, packed_bytes=sum(quantized.values()),
        effective_bits=round(info.effective_bits, 4), model_bytes=info.n_bytes, simulated=True,
        seconds=round(time.perf_counter() - start, 3),
        note=f"GGUF file {info.path.name}: tensor types {mix}; bits/weight and size are the "
             "file's own tensor bytes; evaluated as gguf-py's dequantized float weights",
    )  # fmt: skip
