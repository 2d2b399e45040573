"""The variants of a sweep: methods × bit widths from the command line, or an explicit
list of configurations from a file."""

from __future__ import annotations

from pathlib import Path

from harness.errors import InputError
from harness.methods import METHODS, make_config
from harness.records import Artifact, Variant
from harness.registry import UnknownName
from harness.yamlfile import read_yaml


def sweep(methods: list[str], bits: list[int], options: dict) -> tuple[list[Variant], list[str]]:
    """Every method at every bit width it supports, with the shared ``options``.

    Returns the variants and one line per skipped (method, bits) pair. A bit width no
    method supports, or an option a method does not have, is an input error.
    """
    if not methods:
        raise InputError("--methods: give at least one method")
    classes = {}
    for method in methods:
        try:
            classes[method] = METHODS.get(method)
        except UnknownName as exc:
            raise InputError(str(exc)) from None
    for b in bits:
        if not any(b in cls.supported_bits for cls in classes.values()):
            supported = "; ".join(
                f"{m}: {', '.join(map(str, c.supported_bits))}" for m, c in classes.items()
            )
            raise InputError(f"no chosen method supports {b} bits ({supported})")
    variants, skipped, seen = [], [], set()
    for method, cls in classes.items():
        for b in bits:
            if b not in cls.supported_bits:
                supported = ", ".join(map(str, cls.supported_bits))
                skipped.append(f"{method} at {b} bits: not supported (supports {supported})")
                continue
            _add(variants, seen, make_config(method, bits=b, **options))
    return variants, skipped


def load_variants(path: Path) -> list[Variant]:
    """An explicit list of variants: a YAML or JSON list of mappings, each a method
    configuration (``{method: gptq, bits: 4, group_size: 64}``) or a pre-quantized
    artifact of the base model (``{model: PATH, name: NAME, gguf_file: FILE}``)."""
    data = read_yaml(path, "--variants:")
    if not isinstance(data, list) or not data:
        raise InputError(f"{path}: expected a non-empty list of configurations")
    variants, seen = [], set()
    for index, entry in enumerate(data, start=1):
        if isinstance(entry, dict) and "model" in entry:
            _add_artifact(variants, seen, entry, f"{path}: entry {index}")
            continue
        if not isinstance(entry, dict) or "method" not in entry:
            raise InputError(
                f"{path}: entry {index} must be a mapping with a 'method' or a 'model' key"
            )
        options = {k: _tuples(v) for k, v in entry.items() if k != "method"}
        try:
            config = make_config(str(entry["method"]), **options)
        except InputError as exc:
            raise InputError(f"{path}: entry {index}: {exc}") from None
        _add(variants, seen, config, f"{path}: entry {index}")
    return variants


def _add(variants: list[Variant], seen: set[str], config, where: str = "") -> None:
    name = config.variant_name
    if name in seen:
        if where:
            raise InputError(f"{where}: variant {name!r} is listed twice")
        return
    seen.add(name)
    variants.append(Variant(name, config))


ARTIFACT_KEYS = ("model", "name", "gguf_file")


def artifact_variants(sources: list[str]) -> list[Variant]:
    """``--variant-models A,B``: each a pre-quantized artifact, named after its file."""
    variants, seen = [], set()
    for source in sources:
        _add_artifact(variants, seen, {"model": source}, "--variant-models")
    return variants


def _add_artifact(variants: list[Variant], seen: set[str], entry: dict, where: str) -> None:
    unknown = sorted(set(entry) - set(ARTIFACT_KEYS))
    if unknown:
        raise InputError(f"{where}: unknown key {unknown[0]!r} for a model entry "
                         f"(known: {', '.join(ARTIFACT_KEYS)})")  # fmt: skip
    if not all(isinstance(entry.get(k, ""), str) for k in ARTIFACT_KEYS):
        raise InputError(f"{where}: 'model', 'name' and 'gguf_file' must be strings")
    artifact = Artifact(entry["model"], entry.get("gguf_file"))
    name = entry.get("name") or Path(artifact.gguf_file or artifact.source.rstrip("/")).stem
    if name in seen or name == "baseline":
        raise InputError(f"{where}: variant name {name!r} is taken; give the entry a 'name'")
    seen.add(name)
    variants.append(Variant(name, artifact=artifact))


def _tuples(value):
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value
