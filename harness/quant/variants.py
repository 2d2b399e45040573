"""The variants of a sweep: methods × bit widths from the command line, or an explicit
list of configurations from a file."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from harness.engine.kvcache import check_kv_bits
from harness.errors import InputError
from harness.quant import METHODS, make_config
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


def with_kv_cache(variants: list[Variant], kv_bits: list[int]) -> list[Variant]:
    """``variants``, then each of them and the unquantized weights with the KV cache at
    every width of ``kv_bits`` (``kv4``, ``rtn-w4g128-kv4``)."""
    out = list(variants)
    for bits in kv_bits:
        try:
            check_kv_bits(bits)
        except ValueError as exc:
            raise InputError(f"--kv-bits: {exc}") from None
        out.append(Variant(f"kv{bits}", kv_bits=bits))
        out.extend(
            replace(v, name=f"{v.name}-kv{bits}", kv_bits=bits) for v in variants if not v.kv_bits
        )
    names = [v.name for v in out]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InputError(f"--kv-bits: variant {twice[0]!r} is listed twice")
    return out


def load_variants(path: Path) -> list[Variant]:
    """An explicit list of variants: a YAML or JSON list of mappings, each a method
    configuration (``{method: gptq, bits: 4, group_size: 64}``), a pre-quantized artifact
    of the base model (``{model: PATH, name: NAME, gguf_file: FILE}``) or the base
    weights (``{kv_bits: 4}``); any of them with ``kv_bits`` for a quantized KV cache."""
    data = read_yaml(path, "--variants:")
    if not isinstance(data, list) or not data:
        raise InputError(f"{path}: expected a non-empty list of configurations")
    variants, seen = [], set()
    for index, entry in enumerate(data, start=1):
        where = f"{path}: entry {index}"
        if not isinstance(entry, dict) or not {"method", "model", "kv_bits"} & set(entry):
            raise InputError(f"{where} must be a mapping with a 'method', 'model' or 'kv_bits' key")
        entry = dict(entry)
        kv_bits = entry.pop("kv_bits", None)
        if kv_bits is not None:
            try:
                check_kv_bits(kv_bits)
            except ValueError as exc:
                raise InputError(f"{where}: {exc}") from None
        if "model" in entry:
            _add_artifact(variants, seen, entry, where, kv_bits)
            continue
        if "method" not in entry:
            if entry:
                raise InputError(f"{where}: unknown key {sorted(entry)[0]!r} without a 'method'")
            _add(variants, seen, None, where, kv_bits)
            continue
        options = {k: _tuples(v) for k, v in entry.items() if k != "method"}
        try:
            config = make_config(str(entry["method"]), **options)
        except InputError as exc:
            raise InputError(f"{where}: {exc}") from None
        _add(variants, seen, config, where, kv_bits)
    return variants


def _kv_name(name: str | None, kv_bits: int | None) -> str:
    parts = [p for p in (name, f"kv{kv_bits}" if kv_bits else None) if p]
    return "-".join(parts)


def _add(variants: list[Variant], seen: set[str], config, where: str = "",
         kv_bits: int | None = None) -> None:  # fmt: skip
    name = _kv_name(config.variant_name if config else None, kv_bits)
    if name in seen:
        if where:
            raise InputError(f"{where}: variant {name!r} is listed twice")
        return
    seen.add(name)
    variants.append(Variant(name, config, kv_bits=kv_bits))


ARTIFACT_KEYS = ("model", "name", "gguf_file")


def artifact_variants(sources: list[str]) -> list[Variant]:
    """``--variant-models A,B``: each a pre-quantized artifact, named after its file."""
    variants, seen = [], set()
    for source in sources:
        _add_artifact(variants, seen, {"model": source}, "--variant-models")
    return variants


def _add_artifact(variants: list[Variant], seen: set[str], entry: dict, where: str,
                  kv_bits: int | None = None) -> None:  # fmt: skip
    unknown = sorted(set(entry) - set(ARTIFACT_KEYS))
    if unknown:
        raise InputError(f"{where}: unknown key {unknown[0]!r} for a model entry "
                         f"(known: {', '.join(ARTIFACT_KEYS)})")  # fmt: skip
    if not all(isinstance(entry.get(k, ""), str) for k in ARTIFACT_KEYS):
        raise InputError(f"{where}: 'model', 'name' and 'gguf_file' must be strings")
    artifact = Artifact(entry["model"], entry.get("gguf_file"))
    name = entry.get("name") or Path(artifact.gguf_file or artifact.source.rstrip("/")).stem
    name = name if entry.get("name") else _kv_name(name, kv_bits)
    if name in seen or name == "baseline":
        raise InputError(f"{where}: variant name {name!r} is taken; give the entry a 'name'")
    seen.add(name)
    variants.append(Variant(name, artifact=artifact, kv_bits=kv_bits))


def _tuples(value):
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value
