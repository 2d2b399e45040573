"""Helpers shared by the method tests: the bit widths each method sweeps, options that
fit the tiny model, and a model's logits."""

from __future__ import annotations

import torch

# method -> bit widths to sweep (each supported; errors must fall from left to right)
SWEEPS = {
    "rtn": (2, 3, 4, 8),
    "gptq": (2, 3, 4, 8),
    "awq": (2, 3, 4, 8),
    "hqq": (2, 3, 4, 8),
    "bnb": (4, 8),
    "gguf": (4, 5, 8),
    "torchao": (2, 3, 4, 8),
}


UNSUPPORTED = {"rtn": 1, "gptq": 1, "awq": 1, "hqq": 7, "bnb": 3, "gguf": 3, "torchao": 1}


def logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


def rel_error(a, b) -> float:
    return float((a - b).norm() / a.norm())


def fit(method: str) -> dict:
    """Options that fit the tiny model's 64/128-wide rows."""
    return {"rtn": {"group_size": 32}, "gptq": {"group_size": 32}, "awq": {"group_size": 32},
            "hqq": {"group_size": 32}, "torchao": {"group_size": 32}}.get(method, {})  # fmt: skip
