"""The scorer against independent plain-transformers computations: batching, KLD and top-1 against the baseline, the reference head, logit scaling."""

from __future__ import annotations

import copy

import pytest
import torch

from harness.data.suites import load_items, load_suite
from harness.engine.scorer import Scorer
from harness.engine.tasks import (
    evaluate_task,
    prepare,
)
from harness.quant import quantize_
from harness.quant.rtn import RTNConfig
from tests.engine.scoring import TEXT, ppl_task, run_task


def test_scores_do_not_depend_on_batching(tiny_suite, tiny_model, tokenizer):
    for task in load_suite(tiny_suite).tasks:
        single, _ = run_task(task, tiny_model, tokenizer, batch_size=1)
        batched, _ = run_task(task, tiny_model, tokenizer, batch_size=8)
        for a, b in zip(single, batched, strict=True):
            assert a.nll == pytest.approx(b.nll, rel=1e-5, abs=1e-5)
            assert a.prediction == b.prediction


def test_kld_top1_and_gold_probability_against_the_baseline(tmp_path, tiny_model, tokenizer):
    """A variant identical to the baseline has zero KLD and full top-1 agreement; a
    quantized one has, at every token, the exact full-vocabulary KLD, top-1 agreement and
    change of the gold token's probability, computed here from ``model(...).logits``."""
    task = ppl_task(tmp_path, window=512)
    base_rows, reference = run_task(task, tiny_model, tokenizer)
    assert next(iter(reference.values())).hidden.dtype == torch.float16  # 16-bit storage
    same_rows, _ = run_task(task, tiny_model, tokenizer, reference=reference)
    assert same_rows[0].kld == pytest.approx(0.0, abs=1e-6)
    assert same_rows[0].top1_agree == 1.0
    variant = copy.deepcopy(tiny_model)
    quantize_(variant, RTNConfig(bits=2, group_size=32))
    rows, _ = run_task(task, variant, tokenizer, reference=reference, base=tiny_model)
    ids = [tokenizer.bos_token_id] + tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        p = tiny_model(torch.tensor([ids])).logits[0, :-1].double().log_softmax(-1)
        q = variant(torch.tensor([ids])).logits[0, :-1].double().log_softmax(-1)
    exact = (p.exp() * (p - q)).sum(-1)
    gold = torch.tensor(ids[1:])[:, None]
    dp = (q.gather(1, gold).exp() - p.gather(1, gold).exp())[:, 0]
    agree = (p.argmax(-1) == q.argmax(-1)).double().mean()
    assert rows[0].kld == pytest.approx(float(exact.mean()), rel=1e-3)
    assert torch.allclose(torch.tensor(rows[0].kld_tokens).double(), exact, rtol=1e-2, atol=1e-5)
    assert torch.allclose(torch.tensor(rows[0].dp_tokens).double(), dp, atol=1e-4)
    assert rows[0].top1_agree == pytest.approx(float(agree))
    assert rows[0].kld > 0.01


def test_a_quantized_head_keeps_the_baseline_reference(tmp_path, tiny_model, tokenizer):
    """A method that quantizes the output head in place: with ``keep_copy`` the reference
    is still the baseline's (exact KLD); without it, an error, never a wrong number."""
    task = ppl_task(tmp_path, window=512)
    model = copy.deepcopy(tiny_model)
    items = prepare(
        task, load_items(task), tokenizer, tokenizer.bos_token_id, load_items(task), seed=0
    )
    scorer = Scorer(model, tokenizer.pad_token_id, max_length=512)
    _, reference = evaluate_task(task, items, scorer, tokenizer, "baseline", None)
    scorer.reference_head.keep_copy()
    quantize_(model, RTNConfig(bits=2, group_size=32, ignore=()))
    rows, _ = evaluate_task(task, items, scorer, tokenizer, "v", reference)
    ids = [tokenizer.bos_token_id] + tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        p = tiny_model(torch.tensor([ids])).logits[0, :-1].double().log_softmax(-1)
        q = model(torch.tensor([ids])).logits[0, :-1].double().log_softmax(-1)
    assert rows[0].kld == pytest.approx(float((p.exp() * (p - q)).sum(-1).mean()), rel=1e-3)
    unguarded = Scorer(copy.deepcopy(tiny_model), tokenizer.pad_token_id, max_length=512)
    quantize_(unguarded.model, RTNConfig(bits=2, group_size=32, ignore=()))
    with pytest.raises(RuntimeError, match="output head was changed"):
        evaluate_task(task, items, unguarded, tokenizer, "v", reference)


@pytest.mark.parametrize("arch", ["Granite", "Cohere", "Gemma2"])
def test_scores_use_the_architectures_own_logit_scaling(arch, tmp_path, tokenizer):
    """Granite divides its logits, Cohere multiplies them, Gemma-2 soft-caps them: the
    engine's log-probabilities and KLD equal those of ``model(...).logits``."""
    model = _tiny(arch, len(tokenizer))
    task = ppl_task(tmp_path, window=128)
    rows, reference = run_task(task, model, tokenizer)
    ids = [tokenizer.bos_token_id] + tokenizer(TEXT, add_special_tokens=False)["input_ids"][:128]
    with torch.no_grad():
        logp = model(torch.tensor([ids])).logits[0, :-1].double().log_softmax(-1)
    first = -float(logp.gather(1, torch.tensor(ids[1:])[:, None]).sum())
    items = prepare(task, load_items(task), tokenizer, tokenizer.bos_token_id, load_items(task), 0)
    scorer = Scorer(model, tokenizer.pad_token_id, max_length=512)
    first_window = scorer.score([items[0].requests[0]])[0]
    assert -float(first_window.token_logprobs.sum()) == pytest.approx(first, rel=1e-4)
    variant = copy.deepcopy(model)
    quantize_(variant, RTNConfig(bits=3, group_size=32))
    with torch.no_grad():
        q = variant(torch.tensor([ids])).logits[0, :-1].double().log_softmax(-1)
    exact = (logp.exp() * (logp - q)).sum(-1)
    rows, _ = run_task(task, variant, tokenizer, reference=reference, base=model)
    assert torch.allclose(
        torch.tensor(rows[0].kld_tokens[:128]).double(), exact, rtol=1e-2, atol=1e-5
    )


def test_an_unknown_output_transform_is_refused(tiny_model, tokenizer):
    """A model whose forward changes its logits in a way the engine does not reproduce
    is an input error, never silently mis-scored."""
    from harness.errors import InputError

    class Scaled(type(tiny_model)):
        def forward(self, *args, **kwargs):
            out = super().forward(*args, **kwargs)
            out.logits = out.logits * 3.0
            return out

    model = Scaled(tiny_model.config).eval()
    model.load_state_dict(tiny_model.state_dict())
    with pytest.raises(InputError, match="output transform"):
        Scorer(model, tokenizer.pad_token_id)


def _tiny(arch: str, vocab: int):
    import transformers

    common = dict(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                  pad_token_id=2, bos_token_id=0, eos_token_id=1, head_dim=16)  # fmt: skip
    extra = {"Granite": {"logits_scaling": 8.0}, "Cohere": {"logit_scale": 0.0625},
             "Gemma2": {"final_logit_softcapping": 0.5, "attn_logit_softcapping": None}}[arch]  # fmt: skip
    config = getattr(transformers, f"{arch}Config")(**common, **extra)
    torch.manual_seed(0)
    model = getattr(transformers, f"{arch}ForCausalLM")(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.3)
    return model
