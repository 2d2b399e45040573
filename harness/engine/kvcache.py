"""KV-cache quantization at evaluation time, through transformers' ``QuantizedCache``
(HQQ backend: it runs on CPU and supports 8, 4 and 2 bits).

The cache stores keys and values quantized and keeps the most recent ``RESIDUAL`` tokens
in full precision until they fill up, then quantizes everything (the KIVI scheme). What a
token sees therefore depends on how the text reached the cache. The harness scores and
decodes with one rule, the way a served prompt meets its answer: everything before the
scored positions is prefilled into the cache (stored quantized), then the scored
positions — the prompt's last token and the answer — are fed in chunks of ``RESIDUAL``
tokens, each attending to the quantized history and to its own tokens in full precision.
Decoding prefills the prompt but its last token the same way, then generates on.

Groups of 64 run along each head's channels, per token (``axis=1``), so a row's values
never depend on what it is batched or padded with.
"""

from __future__ import annotations

import torch

KV_BITS = (8, 4, 2)
RESIDUAL = 128  # transformers' default residual length
GROUP = 64


def check_kv_bits(bits: int) -> None:
    if bits not in KV_BITS:
        raise ValueError(f"kv_bits must be one of {', '.join(map(str, KV_BITS))}, not {bits}")


def quantized_cache(model: torch.nn.Module, bits: int):
    """An empty transformers quantized cache (hqq backend) for ``model`` at ``bits``."""
    from transformers import QuantizedCache

    config = model.config.get_text_config()
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    group = GROUP if head_dim % GROUP == 0 else head_dim
    options = {"nbits": bits, "axis_key": 1, "axis_value": 1, "q_group_size": group,
               "residual_length": RESIDUAL}  # fmt: skip
    cache = QuantizedCache(backend="hqq", config=config, **options)
    cache.layers = [_unpacked_layer_class()(**options) for _ in cache.layers]
    return cache


def _unpacked_layer_class():
    from transformers.cache_utils import HQQQuantizedLayer

    class UnpackedHQQLayer(HQQQuantizedLayer):
        """transformers' hqq cache layer, its codes kept one per byte instead of
        bit-packed: hqq packs 8/bits rows into a byte and fails on a row count that is
        not a multiple (per-token groups of a prompt of any length). Same values."""

        def _quantize(self, tensor, axis):
            qtensor, meta = self.quantizer.quantize(tensor, axis=axis, device=self.keys.device,
                                                    compute_dtype=self.keys.dtype, nbits=self.nbits,
                                                    group_size=self.q_group_size, bitpack=False)  # fmt: skip
            meta["compute_dtype"] = self.keys.dtype  # as transformers' layer casts them
            meta["scale"], meta["zero"] = (meta[k].to(self.keys.dtype) for k in ("scale", "zero"))
            return qtensor, meta

    return UnpackedHQQLayer


def cached_hidden(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor,
                  positions: torch.Tensor, keep: int, bits: int) -> torch.Tensor:  # fmt: skip
    """The final hidden states of the last ``keep`` positions ``[batch, keep, d]``, with
    the positions before them read back from a ``bits``-bit quantized cache."""
    width = ids.shape[1]
    split = width - keep
    cache = prefilled_cache(model, ids[:, :split], mask[:, :split], bits)
    hidden = []
    for start in range(split, width, RESIDUAL):
        stop = min(start + RESIDUAL, width)
        out = model.base_model(input_ids=ids[:, start:stop], attention_mask=mask[:, :stop],
                               position_ids=positions[:, start:stop], cache=cache, use_cache=True)  # fmt: skip
        hidden.append(out.last_hidden_state)
    return torch.cat(hidden, dim=1)


def prefilled_cache(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, bits: int):
    """A ``bits``-bit quantized cache holding ``ids`` (left-padded rows, ``mask``), for
    scoring or ``model.generate`` to go on from."""
    cache = quantized_cache(model, bits)
    if ids.shape[1] > 0:
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
        model.base_model(input_ids=ids, attention_mask=mask, position_ids=positions,
                         cache=cache, use_cache=True)  # fmt: skip
    return cache


def kv_cache_record(bits: int) -> dict:
    """What the run manifest keeps of a variant's KV-cache quantization."""
    return {"bits": bits, "library": "transformers QuantizedCache, hqq backend",
            "group_size": GROUP, "groups": "per token, along each head's channels",
            "residual_length": RESIDUAL}  # fmt: skip
