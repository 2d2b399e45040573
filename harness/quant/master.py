"""The float base weights kept aside, so every variant starts from them (read back from
the safetensors files where possible, else from a copy in memory)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn


class MasterCopy:
    """The base weights, so each variant starts from them without reloading the model:
    every Linear layer (layers a method replaced, and parameters it swapped for quantized
    tensors, are put back too) and every other parameter (embeddings and norms, which an
    artifact overwrites).

    Given the safetensors ``files`` the model was loaded from, weights are read back from
    disk straight into the parameters (no second copy in memory: the fp32 model plus a
    float master copy would not fit the 2.5x-model memory budget); otherwise, or when a
    parameter is not found there with the same dtype and shape, a copy is kept in memory.
    """

    def __init__(self, model: nn.Module, files: list[Path] | tuple = ()) -> None:
        self.model = model
        self.layers = {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear)}
        self.params = {name: dict(m._parameters) for name, m in self.layers.items()}
        embedding = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
        tied = embedding.weight.data_ptr() if embedding is not None else None
        linear = {f"{name}.{key}": p for name, params in self.params.items()
                  for key, p in params.items() if p is not None and p.data_ptr() != tied}  # fmt: skip
        owned = {id(p) for params in self.params.values() for p in params.values()}
        self.others = {n: p for n, p in model.named_parameters() if id(p) not in owned}
        self.on_disk = _locate({**linear, **self.others}, files)
        self.tensors = None
        if self.on_disk is None:
            self.tensors = {
                name: {key: t.detach().clone() for key, t in m.named_parameters(recurse=False)}
                for name, m in self.layers.items()
            } | {name: {"": p.detach().clone()} for name, p in self.others.items()}

    @property
    def source(self) -> str:
        return "disk" if self.on_disk is not None else "memory"

    @torch.no_grad()
    def restore(self) -> None:
        for name, layer in self.layers.items():
            if self.model.get_submodule(name) is not layer:
                self.model.set_submodule(name, layer)
            for key, param in self.params[name].items():
                if layer._parameters.get(key) is not param:
                    layer._parameters[key] = param
                if param is not None:
                    self._put_back(f"{name}.{key}", param, self.tensors and self.tensors[name][key])
        for name, param in self.others.items():
            self._put_back(name, param, self.tensors and self.tensors[name][""])

    def _put_back(self, name: str, param: torch.Tensor, copy: torch.Tensor | None) -> None:
        if copy is not None:
            param.copy_(copy)
        elif name in self.on_disk:
            path, offset = self.on_disk[name]
            with open(path, "rb") as f:
                f.seek(offset)
                f.readinto(param.detach().view(-1).view(torch.uint8).numpy())


_SAFETENSORS_DTYPES = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16"}


def _locate(params: dict[str, torch.Tensor], files) -> dict[str, tuple[Path, int]] | None:
    """Where each parameter's bytes lie in the safetensors ``files`` (path, offset), or
    None unless every one is there with its dtype and shape and lives in CPU memory."""
    if not files:
        return None
    found = {}
    for path in files:
        with open(path, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(size))
        for name, entry in header.items():
            if name in params:
                found[name] = (Path(path), 8 + size + entry["data_offsets"][0], entry)
    located = {}
    for name, tensor in params.items():
        if name not in found or tensor.device.type != "cpu" or not tensor.is_contiguous():
            return None
        path, offset, entry = found[name]
        if entry["dtype"] != _SAFETENSORS_DTYPES.get(tensor.dtype) or list(entry["shape"]) != list(
            tensor.shape
        ):
            return None
        located[name] = (path, offset)
    return located
