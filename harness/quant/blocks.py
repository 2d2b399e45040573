"""Block-by-block calibration shared by GPTQ and AWQ: find the stack of decoder blocks
holding the layers to quantize, and capture what the first block is called with on
calibration text (hidden states and the rest of its arguments), so each block can be
run on its own."""

from __future__ import annotations

import torch
from torch import nn

from harness.errors import InputError
from harness.quant import size_report
from harness.quant.rtn import fake_quantize, storage_bits
from harness.records import QuantReport


class _Captured(Exception):
    pass


def decoder_blocks(model: nn.Module, layers, method: str) -> nn.ModuleList:
    """The ModuleList holding most of ``layers`` (a decoder's blocks)."""
    lists = [m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m) > 0]
    chosen = {id(layer) for _, layer in layers}

    def held(ml):
        return sum(id(m) in chosen for m in ml.modules())

    best = max(lists, key=held, default=None)
    if best is None or held(best) == 0:
        raise InputError(
            f"method {method!r}: found no stack of decoder blocks holding the Linear layers"
        )
    return best


def block_inputs(model: nn.Module, first_block: nn.Module, tokens: torch.Tensor, batch_size: int):
    """Run the model up to its first block: its call arguments per batch of calibration
    sequences, as ``(args, kwargs)`` with the hidden states as ``kwargs["hidden_states"]``."""
    captured = []

    def grab(_module, args, kwargs):
        kwargs = dict(kwargs)
        if args:
            args, kwargs["hidden_states"] = args[1:], args[0]
        captured.append((args, kwargs))
        raise _Captured

    handle = first_block.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        device = next(model.parameters()).device
        for start in range(0, len(tokens), batch_size):
            try:
                model(input_ids=tokens[start : start + batch_size].to(device), use_cache=False)
            except _Captured:
                pass
    finally:
        handle.remove()
    return captured


def first_output(result):
    """A module's main output (blocks and attention modules return tuples)."""
    return result[0] if isinstance(result, tuple | list) else result


def next_inputs(block: nn.Module, batches: list) -> list:
    """The next block's call arguments: ``block``'s outputs as the new hidden states."""
    return [(args, {**kwargs, "hidden_states": first_output(block(*args, **kwargs))})
            for args, kwargs in batches]  # fmt: skip


def blockwise_report(config, layers, done: set[int], rest: int) -> QuantReport:
    """Round to nearest the ``layers`` no calibration input reached (outside the decoder
    blocks: ids not in ``done``), then account the sizes of all of them on the RTN grid
    (scales and zero-points at 16 bits)."""
    outside = [layer for _, layer in layers if id(layer) not in done]
    for layer in outside:
        layer.weight.copy_(
            fake_quantize(layer.weight, config.bits, config.group_size, config.symmetric)
        )
    stored_bits = sum(storage_bits(tuple(layer.weight.shape), config.bits, config.group_size,
                                   config.symmetric) for _, layer in layers)  # fmt: skip
    n_weights = sum(layer.weight.numel() for _, layer in layers)
    note = "scales and zero-points counted at 16 bits"
    if outside:
        note += f"; {len(outside)} layer(s) outside the decoder blocks rounded to nearest"
    return size_report(config.method, config.bits, len(layers), n_weights, stored_bits, rest,
                       simulated=True, note=note)  # fmt: skip
