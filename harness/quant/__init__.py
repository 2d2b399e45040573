"""Quantization methods: ``quantize_(model, config)`` dispatches on the config's type.

A method is a frozen ``@dataclass`` config (a :class:`~harness.records.QuantConfig`
subclass that validates itself) plus a handler registered for that config type::

    @register_method(MyConfig)
    def quantize_my(model, config, calib=None) -> QuantReport: ...

Methods are listed lazily in ``METHODS`` so heavy libraries load only when used.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import importlib
import json
import math
import time
from collections.abc import Callable

import torch
from torch import nn

from harness.errors import InputError
from harness.records import QuantConfig, QuantReport
from harness.registry import Registry, UnknownName

# method name -> config class (lazy "module:attr" until first use)
METHODS: Registry[type[QuantConfig]] = Registry("quantization method")
METHODS.register("rtn", "harness.quant.rtn:RTNConfig")
METHODS.register("gptq", "harness.quant.gptq:GPTQConfig")
METHODS.register("awq", "harness.quant.awq:AWQConfig")
METHODS.register("hqq", "harness.quant.hqq:HQQConfig")
METHODS.register("bnb", "harness.quant.bnb:BnbConfig")
METHODS.register("gguf", "harness.quant.gguf:GGUFConfig")
METHODS.register("torchao", "harness.quant.torchao:TorchaoConfig")

Handler = Callable[..., QuantReport]
_HANDLERS: dict[type[QuantConfig], Handler] = {}


def register_method(config_cls: type[QuantConfig]) -> Callable[[Handler], Handler]:
    """Register ``fn`` as the quantizer for ``config_cls`` (and its method name)."""

    def decorator(fn: Handler) -> Handler:
        _HANDLERS[config_cls] = fn
        if config_cls.method not in METHODS:
            METHODS.register(config_cls.method, config_cls)
        return fn

    return decorator


def quantize_(model: nn.Module, config: QuantConfig, calib=None) -> QuantReport:
    """Quantize ``model`` in place according to ``config``; return its size accounting."""
    METHODS.get(config.method)  # imports the method's module, which registers its handler
    handler = _HANDLERS.get(type(config))
    if handler is None:
        raise InputError(f"no quantizer registered for {type(config).__name__}")
    start = time.perf_counter()
    with torch.no_grad():
        report = handler(model, config, calib)
    return dataclasses.replace(report, seconds=time.perf_counter() - start)


def make_config(method: str, **options) -> QuantConfig:
    """Build and validate a method's config from plain options (CLI, manifest)."""
    try:
        config_cls = METHODS.get(method)
    except UnknownName as exc:
        raise InputError(str(exc)) from None
    known = {f.name for f in dataclasses.fields(config_cls) if f.init}
    unknown = sorted(set(options) - known)
    if unknown:
        raise InputError(f"method {method!r} has no option(s) {', '.join(unknown)}")
    try:
        return config_cls(**options)
    except (TypeError, ValueError) as exc:
        raise InputError(str(exc)) from None


def config_to_dict(config: QuantConfig) -> dict:
    """A JSON-ready dict that :func:`config_from_dict` turns back into the same config."""
    return json.loads(json.dumps(dataclasses.asdict(config)))  # tuples become lists


def _tuples(value):
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def config_from_dict(data: dict) -> QuantConfig:
    options = {k: _tuples(v) for k, v in data.items()}
    return make_config(options.pop("method"), **options)


def select_linears(model: nn.Module, ignore: tuple[str, ...]) -> list[tuple[str, nn.Linear]]:
    """The ``nn.Linear`` layers to quantize: every one whose name matches no ``ignore``
    pattern (fnmatch, or a plain name suffix) and whose weight is not tied to the input
    embedding (overwriting a tied head would change the embedding too)."""
    embedding = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    tied_ptr = embedding.weight.data_ptr() if embedding is not None else None
    chosen = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        if any(pat and (fnmatch.fnmatchcase(name, pat) or name.endswith(pat)) for pat in ignore):
            continue
        if module.weight.data_ptr() == tied_ptr:
            continue
        chosen.append((name, module))
    return chosen


def quantizes_output_head(model: nn.Module, config: QuantConfig) -> bool:
    """Whether ``config`` would quantize the model's output head (its ``ignore`` spares it)."""
    head = model.get_output_embeddings()
    return any(m is head for _, m in select_linears(model, getattr(config, "ignore", ())))


def model_bytes_16bit(model: nn.Module, excluding: set[int] = frozenset()) -> int:
    """Bytes of the parameters not in ``excluding`` (by id) at 16 bits each; tied
    parameters count once."""
    return sum(2 * p.numel() for p in model.parameters() if id(p) not in excluding)


def check_bits(config: QuantConfig, *bits: int) -> None:
    """Raise a ValueError naming the method and what it supports for any unsupported width."""
    for b in bits or (config.bits,):
        if b not in config.supported_bits:
            supported = ", ".join(map(str, config.supported_bits))
            raise ValueError(f"method {config.method!r} supports bits {supported}, not {b}")


def unquantized_bytes(model: nn.Module, layers: list[tuple[str, nn.Module]]) -> int:
    """Bytes at 16 bits of every parameter except the weights of ``layers`` (call it before
    a method replaces modules or tensors). Biases stay in 16 bits."""
    return model_bytes_16bit(model, excluding={id(layer.weight) for _, layer in layers})


def size_report(
    method: str,
    bits: int,
    n_layers: int,
    n_weights: int,
    stored_bits: int,
    rest_bytes: int,
    *,
    simulated: bool,
    note: str = "",
) -> QuantReport:
    """Size accounting shared by every method: ``stored_bits`` of codes, scales and zeros
    for the ``n_weights`` quantized weights, plus ``rest_bytes`` for everything else."""
    packed = math.ceil(stored_bits / 8)
    return QuantReport(
        method=method,
        bits=bits,
        n_layers=n_layers,
        n_weights=n_weights,
        packed_bytes=packed,
        effective_bits=stored_bits / max(n_weights, 1),
        model_bytes=packed + rest_bytes,
        simulated=simulated,
        seconds=0.0,
        note=note,
    )


def require(module: str, extra: str):
    """Import an optional library, or fail with the ``pip install`` line that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise InputError(
            f"this method needs the {module!r} package ({exc}); install it with "
            f"`pip install -c constraints.txt -e '.[{extra}]'`"
        ) from None
