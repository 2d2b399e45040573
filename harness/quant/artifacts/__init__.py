"""Pre-quantized artifacts as variants: the file a team ships, scored against its base.

Two kinds of artifact, one contract: :func:`inspect_artifact` reads what the artifact
says about itself (format, content hash, size per tensor type) without loading it;
:func:`check_compatible` refuses one that is not a quantized copy of the base model,
naming the difference (architecture, shapes, vocabulary); :func:`load_artifact` gives
the model to score and the :class:`~harness.records.QuantReport` of its real size.

* ``gguf`` (:mod:`.gguf`): llama.cpp's files, dequantized into the base model in place.
* Hugging Face checkpoints (:mod:`.checkpoint`) whose ``quantization_config`` is
  compressed-tensors, bitsandbytes or torchao: loaded by transformers and the format's
  own library beside the base model.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from harness.errors import InputError
from harness.records import Artifact, QuantReport

# base config keys an artifact must share
SHAPE_KEYS = ("hidden_size", "num_hidden_layers", "intermediate_size", "num_attention_heads",
              "num_key_value_heads", "vocab_size", "tie_word_embeddings")  # fmt: skip


@dataclass(frozen=True)
class ArtifactInfo:
    """What an artifact says about itself, read before any evaluation."""

    path: Path
    sha256: str  # of its content: stored rows are tied to it, not to the path
    format: str  # "gguf", or a checkpoint's quant_method ("compressed-tensors", ...)
    label: str  # e.g. "Q4_K_M" or "w4a16"
    tensor_types: dict[str, int]  # stored type -> number of tensors
    type_bytes: dict[str, int]  # stored type -> bytes
    evaluated: str  # how it is scored: "dequantized float weights", "packed", ...

    @property
    def method(self) -> str:
        return f"{self.format}:{self.label}"

    @property
    def n_bytes(self) -> int:
        return sum(self.type_bytes.values())

    def record(self) -> dict:
        return {"format": self.format, "sha256": self.sha256}

    def type_mix(self) -> str:
        return ", ".join(
            f"{t} ×{n}" for t, n in sorted(self.tensor_types.items(), key=lambda x: -x[1])
        )


def content_hash(paths: list[Path]) -> str:
    """sha256 over the files' names and bytes: what ties stored rows to an artifact."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode())
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _is_gguf(artifact: Artifact) -> bool:
    return bool(artifact.gguf_file) or artifact.source.endswith(".gguf")


def inspect_artifact(artifact: Artifact) -> ArtifactInfo:
    """Read the artifact's header; refuse a missing, unreadable, unsupported or
    unquantized one."""
    from harness.quant.artifacts import checkpoint, gguf

    return (gguf if _is_gguf(artifact) else checkpoint).inspect(artifact)


def check_compatible(info: ArtifactInfo, model, tokenizer) -> None:
    """Refuse an artifact that is not a quantized copy of the base model."""
    from harness.quant.artifacts import checkpoint, gguf

    config, tokens = (gguf if info.format == "gguf" else checkpoint).description(info)
    base = model.config
    if config.get("model_type") != base.model_type:
        raise InputError(f"{info.path}: architecture {config.get('model_type')!r} does not match "
                         f"the base model's {base.model_type!r}")  # fmt: skip
    for key in SHAPE_KEYS:
        if key in config and config[key] != getattr(base, key, None):
            raise InputError(f"{info.path}: {key} is {config[key]} in the artifact but "
                             f"{getattr(base, key, None)} in the base model")  # fmt: skip
    if tokens is None:
        return
    ours = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    if len(tokens) != len(ours):
        raise InputError(f"{info.path}: its vocabulary has {len(tokens)} tokens, the base "
                         f"tokenizer's {len(ours)}")  # fmt: skip
    for i, (theirs, mine) in enumerate(zip(tokens, ours, strict=True)):
        if theirs != mine:
            raise InputError(f"{info.path}: token {i} is {theirs!r} in the artifact but "
                             f"{mine!r} in the base tokenizer")  # fmt: skip


def load_artifact(model, info: ArtifactInfo):
    """``(model to score, QuantReport)``: the base model with the GGUF's weights written
    in, or the checkpoint loaded beside it (release it after scoring)."""
    from harness.quant.artifacts import checkpoint, gguf

    return (gguf if info.format == "gguf" else checkpoint).load(model, info)


def report(info: ArtifactInfo, n_weights: int, quantized: set[str], seconds: float) -> QuantReport:
    """The size an artifact really takes: its stored bytes, per weight of the base."""
    bits = 8 * info.n_bytes / n_weights
    return QuantReport(
        method=info.method, bits=round(bits), n_layers=sum(info.tensor_types[t] for t in quantized),
        n_weights=n_weights, packed_bytes=sum(info.type_bytes[t] for t in quantized),
        effective_bits=round(bits, 4), model_bytes=info.n_bytes, simulated=info.evaluated != "packed",
        seconds=round(seconds, 3),
        note=f"{info.path.name}: tensor types {info.type_mix()}; bits/weight and size are the "
             f"artifact's own stored bytes; evaluated as {info.evaluated}",
    )  # fmt: skip
