"""GGUF files (llama.cpp's formats) as variants.

Every type gguf-py can dequantize is read, a file of mixed types tensor by tensor. The
header is checked first; then the dequantized weights are written into the base model in
place, one tensor at a time (the float weights come back from the master copy
afterwards), so the file is scored on exactly the baseline's requests with no second
copy of the model in memory.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from harness.errors import InputError
from harness.quant.artifacts import ArtifactInfo, content_hash, report
from harness.records import Artifact

FLOAT_TYPES = ("F32", "F16", "BF16")
EVALUATED = "gguf-py's dequantized float weights"


def gguf_path(artifact: Artifact) -> Path:
    """The artifact's GGUF file (``source`` itself, or ``gguf_file`` inside it)."""
    path = Path(artifact.source).expanduser()
    if artifact.gguf_file:
        path = path / artifact.gguf_file
    if not path.is_file():
        raise InputError(f"variant model not found: {path}")
    return path


def inspect(artifact: Artifact) -> ArtifactInfo:
    """Read the header: refuse a file that is not GGUF, holds a type gguf-py cannot
    dequantize, or holds no quantized tensor at all."""
    import gguf

    path = gguf_path(artifact)
    try:
        reader = gguf.GGUFReader(str(path))
    except (ValueError, OSError) as exc:
        raise InputError(f"{path}: not a readable GGUF file ({exc})") from None
    types, sizes = Counter(), Counter()
    for tensor in reader.tensors:
        kind = tensor.tensor_type
        if kind.name not in FLOAT_TYPES and kind not in gguf.quants._type_traits:
            known = sorted(t.name for t in gguf.quants._type_traits)
            raise InputError(f"{path}: tensor {tensor.name} has type {kind.name}, which gguf-py "
                             f"cannot dequantize (supported: {', '.join(known)})")  # fmt: skip
        types[kind.name] += 1
        sizes[kind.name] += int(tensor.n_bytes)
    quantized = {t: n for t, n in types.items() if t not in FLOAT_TYPES}
    if not quantized:
        raise InputError(f"{path}: holds no quantized tensor ({', '.join(types)} only); "
                         "pass the base model as --model, not as a variant")  # fmt: skip
    return ArtifactInfo(path, content_hash([path]), "gguf", _label(reader, quantized), dict(types),
                        dict(sizes), EVALUATED)  # fmt: skip


def _label(reader, quantized: dict[str, int]) -> str:
    """The file type llama.cpp recorded (``Q4_K_M``), else the commonest quantized type."""
    import gguf

    field = reader.fields.get("general.file_type")
    if field is not None:
        try:
            return gguf.LlamaFileType(int(field.parts[field.data[0]][0])).name.removeprefix(
                "MOSTLY_"
            )
        except ValueError:
            pass
    return max(quantized, key=quantized.get)


def _parsed(path: Path) -> dict:
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    try:
        return load_gguf_checkpoint(str(path), return_tensors=False)
    except (ValueError, KeyError) as exc:
        raise InputError(f"{path}: transformers cannot read this GGUF ({exc})") from None


def description(info: ArtifactInfo) -> tuple[dict, list[str] | None]:
    """The model config (transformers' names) and vocabulary the header declares."""
    parsed = _parsed(info.path)
    return parsed["config"], parsed["tokenizer"].get("tokens")


@torch.no_grad()
def load(model, info: ArtifactInfo):
    """Write the file's dequantized weights into ``model`` (the base, checked first),
    one tensor at a time; every parameter must be covered."""
    import gguf
    from transformers.modeling_gguf_pytorch_utils import (
        TENSOR_PROCESSORS,
        TensorProcessor,
        get_gguf_hf_weights_map,
    )

    start = time.perf_counter()
    parsed = _parsed(info.path)
    reader = gguf.GGUFReader(str(info.path))
    field = reader.fields["general.architecture"]
    architecture = bytes(field.parts[field.data[0]]).decode()
    processor = TENSOR_PROCESSORS.get(architecture, TensorProcessor)(config=parsed["config"])
    names = get_gguf_hf_weights_map(model, processor)
    params = dict(model.named_parameters())
    loaded = set()
    for tensor in reader.tensors:
        weights = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
        result = processor.process(weights=weights, name=tensor.name, tensor_key_mapping=names,
                                   parsed_parameters=parsed)  # fmt: skip
        name = names.get(result.name)
        if name not in params:
            continue
        values = torch.from_numpy(np.array(result.weights))  # a writable copy
        if tuple(values.shape) != tuple(params[name].shape):
            raise InputError(f"{info.path}: tensor {tensor.name} has shape {tuple(values.shape)}, "
                             f"the base's {name} {tuple(params[name].shape)}")  # fmt: skip
        params[name].copy_(values.to(params[name].dtype))
        loaded.add(name)
    missing = sorted(set(params) - loaded)
    if missing:
        raise InputError(f"{info.path}: no tensor for {', '.join(missing[:3])}"
                         f"{' …' if len(missing) > 3 else ''}")  # fmt: skip
    n_weights = sum(int(t.n_elements) for t in reader.tensors)
    quantized = {t for t in info.tensor_types if t not in FLOAT_TYPES}
    return model, report(info, n_weights, quantized, time.perf_counter() - start)
