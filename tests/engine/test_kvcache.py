"""KV-cache quantization: scoring through transformers' quantized cache agrees with
decoding token by token through it, grows with fewer bits, never depends on the batch,
and decoding follows the same rule as scoring."""

from __future__ import annotations

import pytest
import torch

from harness.engine.kvcache import RESIDUAL, cached_hidden, quantized_cache
from harness.engine.scorer import Scorer


def ids_of(tokenizer, text: str, n: int) -> torch.Tensor:
    ids = [tokenizer.bos_token_id, *tokenizer(text, add_special_tokens=False)["input_ids"]]
    return torch.tensor([ids[:n]])


def token_by_token(model, ids: torch.Tensor, keep: int, bits: int) -> torch.Tensor:
    """The independent path: prefill, then one token at a time through the cache, as
    ``generate`` feeds it."""
    cache = quantized_cache(model, bits)
    split = ids.shape[1] - keep
    with torch.no_grad():
        model.base_model(input_ids=ids[:, :split], cache=cache, use_cache=True)
        steps = [model.base_model(input_ids=ids[:, i : i + 1], position_ids=torch.tensor([[i]]),
                                  cache=cache, use_cache=True).last_hidden_state
                 for i in range(split, ids.shape[1])]  # fmt: skip
    return torch.cat(steps, dim=1)


@pytest.mark.parametrize("bits", [8, 4, 2])
def test_scoring_equals_decoding_token_by_token_through_the_cache(tiny_model, tokenizer, bits):
    ids = ids_of(tokenizer, "The pass key is 71432. Remember it. " * 6, 150)
    mask = torch.ones_like(ids)
    positions = torch.arange(ids.shape[1])[None]
    with torch.no_grad():
        chunked = cached_hidden(tiny_model, ids, mask, positions, 12, bits)
    assert torch.allclose(chunked, token_by_token(tiny_model, ids, 12, bits), atol=1e-5)


def test_error_grows_as_the_cache_loses_bits(tiny_model, tokenizer):
    ids = ids_of(tokenizer, "A long context with a needle: 58213. " * 8, 200)
    mask = torch.ones_like(ids)
    positions = torch.arange(ids.shape[1])[None]
    with torch.no_grad():
        full = tiny_model.base_model(input_ids=ids).last_hidden_state[:, -20:]
        error = {b: float((cached_hidden(tiny_model, ids, mask, positions, 20, b) - full).norm()
                          / full.norm()) for b in (8, 4, 2)}  # fmt: skip
    assert 0 < error[8] < error[4] < error[2], error
    assert error[8] < 0.01 < error[2], error


def test_answers_longer_than_the_residual_window_see_their_own_past_quantized(
    tiny_model, tokenizer
):
    """Past ``RESIDUAL`` scored tokens the cache quantizes what it holds: a chunk sees
    the chunks before it quantized, as decoding would."""
    ids = ids_of(tokenizer, "x" * 400, RESIDUAL + 40)
    mask = torch.ones_like(ids)
    positions = torch.arange(ids.shape[1])[None]
    with torch.no_grad():
        full = tiny_model.base_model(input_ids=ids).last_hidden_state
        scored = cached_hidden(tiny_model, ids, mask, positions, RESIDUAL + 40, 2)
    first = scored[:, :RESIDUAL] - full[:, :RESIDUAL]
    later = scored[:, RESIDUAL:] - full[:, RESIDUAL:]
    assert float(first.abs().max()) < 1e-4  # the first chunk attends to itself in full
    assert float(later.abs().max()) > 1e-3


def test_a_row_scores_the_same_alone_and_in_any_batch(tiny_model, tokenizer):
    scorer = Scorer(tiny_model, tokenizer.pad_token_id, batch_size=8, kv_bits=4)
    plain = Scorer(tiny_model, tokenizer.pad_token_id, batch_size=8)
    enc = lambda s: tokenizer(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    target = ([0, *enc("The key is 12345. " * 5 + "The key is")], enc(" 12345"))
    others = [
        ([0, *enc("short")], enc(" one")),
        ([0, *enc("a much longer context " * 9)], enc(" x")),
    ]
    alone = scorer.score([target])[0]
    batched = scorer.score([others[0], target, others[1]])[1]
    assert torch.equal(alone.token_logprobs, batched.token_logprobs)
    assert not torch.allclose(alone.token_logprobs, plain.score([target])[0].token_logprobs)


def test_decoding_follows_the_scoring_rule(tiny_model, tokenizer):
    """Greedy tokens generated through the quantized cache are the ones a scoring pass
    over prompt + those tokens predicts (the harness reads decoding off scoring passes)."""
    scorer = Scorer(tiny_model, tokenizer.pad_token_id, kv_bits=2)
    plain = Scorer(tiny_model, tokenizer.pad_token_id)
    text = "Remember 1000. " * 8 + "The number was"
    prompt = [0, *tokenizer(text, add_special_tokens=False)["input_ids"]]
    generated = scorer.generate_ids([prompt], 6, (), tokenizer)[0]
    assert len(generated) == 6
    assert generated != plain.generate_ids([prompt], 6, (), tokenizer)[0]  # the cache matters
    scored = scorer.score([(prompt, generated)], next_token=True)[0]
    assert scored.argmax.tolist() == generated


def test_a_sweep_with_kv_bits_stores_paired_rows_and_the_cache_settings(
    tiny_model_dir, tiny_suite, tmp_path
):
    import json

    import pandas as pd

    from harness.cli import main

    out = tmp_path / "run"
    code = main(["run", "--model", str(tiny_model_dir), "--suite", str(tiny_suite), "--out", str(out),
                 "--methods", "rtn", "--bits", "4", "--group-size", "32", "--kv-bits", "2",
                 "--threads", "1", "--no-progress"])  # fmt: skip
    assert code in (0, 1)
    manifest = json.loads((out / "manifest.json").read_text())
    assert list(manifest["variants"]) == ["baseline", "rtn-w4g32", "kv2", "rtn-w4g32-kv2"]
    assert manifest["variants"]["kv2"]["kv_cache"]["bits"] == 2
    kv2 = manifest["variants"]["kv2"]
    assert kv2["effective_bits"] == 16.0 and kv2["method"] == "kv-cache" and kv2["bits"] == 2
    knees = json.loads((out / "gate.json").read_text())["knees"]
    assert {k["method"] for k in knees} == {"rtn-g32", "rtn-g32-kv2", "kv-cache"}
    rows = pd.read_parquet(out / "items.parquet")
    by_variant = rows.groupby("variant")["item_id"].apply(sorted)
    assert by_variant["kv2"] == by_variant["baseline"] == by_variant["rtn-w4g32-kv2"]
    scored = rows[(rows["variant"] == "kv2") & (rows["task"] == "text")]
    assert (scored["kld"] > 0).all()  # the cache changes what the base weights predict
    assert "kv2" in (out / "report.md").read_text()
