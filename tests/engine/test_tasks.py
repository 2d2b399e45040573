"""The scoring engine against independent plain-transformers computations."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F

from harness.data.suites import load_items, load_suite
from harness.engine.scorer import ReferenceHead, Scorer
from harness.engine.tasks import (
    encode_pair,
    evaluate_task,
    extract_answer,
    prepare,
    rolling_requests,
)
from harness.quant import quantize_
from harness.quant.rtn import RTNConfig
from harness.records import Task

TEXT = (
    "Quantization rounds every weight to a coarser grid, and the error adds up layer by layer. " * 2
)


def plain_nll(model, ids: list[int]) -> tuple[float, int]:
    """Summed NLL of ids[1:] given the prefix, one unpadded forward pass."""
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, :-1].double()
    logp = torch.log_softmax(logits, dim=-1)
    targets = torch.tensor(ids[1:])
    return -float(logp.gather(1, targets[:, None]).sum()), len(ids) - 1


def strided_nll(model, ids: list[int], window: int, stride: int) -> float:
    """A strided perplexity loop in the style of the Hugging Face docs (labels masked with
    -100), with every window, the last included, ending at its last new target and
    holding ``window`` inputs where the text allows."""
    n = len(ids) - 1  # ids[0] is the prefix token; targets are ids[1..n]
    total, prev, end = 0.0, 0, min(window, n)
    while True:
        begin = max(0, end - window)
        chunk = torch.tensor([ids[begin : end + 1]])
        labels = chunk.clone()
        labels[:, : chunk.shape[1] - (end - prev)] = -100
        with torch.no_grad():
            logits = model(chunk).logits[0, :-1]
        total += float(
            F.cross_entropy(logits.double(), labels[0, 1:], ignore_index=-100, reduction="sum")
        )
        if end == n:
            return total
        prev, end = end, min(end + stride, n)


def ppl_task(tmp_path, window: int, stride: int = 0) -> Task:
    data = tmp_path / "t.jsonl"
    data.write_text(json.dumps({"id": "a", "text": TEXT}) + "\n")
    return Task(
        name="ppl", kind="perplexity", data=data, window=window, stride=stride, metric="perplexity"
    )


def run_task(task, model, tokenizer, reference=None, batch_size=4, variant="v", base=None):
    """Evaluate ``task`` on ``model``; with a ``reference``, ``base`` is the model it came
    from (default: ``model`` itself)."""
    items = prepare(
        task, load_items(task), tokenizer, tokenizer.bos_token_id, load_items(task), seed=0
    )
    scorer = Scorer(model, tokenizer.pad_token_id, batch_size=batch_size, max_length=512,
                    reference_head=ReferenceHead(base if base is not None else model))  # fmt: skip
    return evaluate_task(task, items, scorer, tokenizer, variant, reference)


def test_rolling_windows_score_every_token_once():
    tokens = list(range(10, 47))
    for window, stride in [(8, 4), (8, 8), (5, 1), (64, 32)]:
        requests = rolling_requests(tokens, 0, window, stride)
        scored = [t for _, cont in requests for t in cont]
        assert scored == tokens
        for ctx, cont in requests:
            assert len(ctx) + len(cont) - 1 <= window
        if len(requests) > 1:  # later windows carry window - stride tokens of context
            assert all(len(ctx) >= window - stride for ctx, _ in requests[1:])


def test_perplexity_matches_plain_transformers_single_window(tmp_path, tiny_model, tokenizer):
    rows, _ = run_task(ppl_task(tmp_path, window=512), tiny_model, tokenizer)
    ids = [tokenizer.bos_token_id] + tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    nll, n = plain_nll(tiny_model, ids)
    assert rows[0].n_tokens == n
    assert math.exp(rows[0].nll / n) == pytest.approx(math.exp(nll / n), rel=1e-4)


@pytest.mark.parametrize("window,stride", [(32, 16), (48, 48), (40, 8)])
def test_perplexity_matches_strided_loop(tmp_path, tiny_model, tokenizer, window, stride):
    rows, _ = run_task(ppl_task(tmp_path, window=window, stride=stride), tiny_model, tokenizer)
    ids = [tokenizer.bos_token_id] + tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    expected = strided_nll(tiny_model, ids, window, stride)
    assert rows[0].nll == pytest.approx(expected, rel=1e-5)


def test_multiple_choice_matches_hand_computation(tiny_suite, tiny_model, tokenizer):
    task = load_suite(tiny_suite).tasks[1]
    rows, _ = run_task(task, tiny_model, tokenizer)
    for row, item in zip(rows, load_items(task), strict=True):
        lls = []
        for choice in item["choices"]:
            ctx_ids = tokenizer(item["context"], add_special_tokens=False)["input_ids"]
            whole = tokenizer(item["context"] + " " + choice, add_special_tokens=False)["input_ids"]
            nll_whole, _ = plain_nll(tiny_model, whole)
            nll_ctx, _ = plain_nll(tiny_model, ctx_ids)
            lls.append(nll_ctx - nll_whole)  # log P(choice | context)
        best = max(range(len(lls)), key=lls.__getitem__)
        normed = [ll / len(c) for ll, c in zip(lls, item["choices"], strict=True)]
        assert row.gold_logprob == pytest.approx(lls[item["answer"]], abs=1e-4)
        assert row.correct == (best == item["answer"])
        assert row.correct_norm == (
            max(range(len(normed)), key=normed.__getitem__) == item["answer"]
        )
        others = [ll for i, ll in enumerate(lls) if i != item["answer"]]
        assert row.margin == pytest.approx(lls[item["answer"]] - max(others), abs=1e-4)
        assert row.n_tokens == len(
            tokenizer(" " + item["choices"][item["answer"]], add_special_tokens=False)["input_ids"]
        )


def test_scores_do_not_depend_on_batching(tiny_suite, tiny_model, tokenizer):
    for task in load_suite(tiny_suite).tasks:
        single, _ = run_task(task, tiny_model, tokenizer, batch_size=1)
        batched, _ = run_task(task, tiny_model, tokenizer, batch_size=8)
        for a, b in zip(single, batched, strict=True):
            assert a.nll == pytest.approx(b.nll, rel=1e-5, abs=1e-5)
            assert a.prediction == b.prediction


def test_generation_matches_unpadded_greedy_decoding(tiny_suite, tiny_model, tokenizer):
    task = load_suite(tiny_suite).tasks[2]
    items = prepare(task, load_items(task), tokenizer, 0, load_items(task), seed=0)
    rows, _ = run_task(task, tiny_model, tokenizer, batch_size=4)
    for row, item in zip(rows, items, strict=True):
        ids = list(item.prompt_ids)
        with torch.no_grad():
            for _ in range(task.max_new_tokens):
                ids.append(int(tiny_model(torch.tensor([ids])).logits[0, -1].argmax()))
        text = tokenizer.decode(ids[len(item.prompt_ids) :], skip_special_tokens=True).split("\n")[
            0
        ]
        assert row.prediction == text
        assert row.correct == (text.strip() == item.target)


def test_fewshot_prompt_and_target_rendering(tiny_suite, tokenizer):
    task = load_suite(tiny_suite).tasks[2]
    items = prepare(task, load_items(task), tokenizer, 0, load_items(task), seed=0)
    prompt = tokenizer.decode(items[0].prompt_ids)
    lines = prompt.split("\n")
    assert len(lines) == 3 and lines[-1] == "0 + 1 ="
    assert all(line.count("+") == 1 and "=" in line for line in lines[:2])
    ctx, cont = items[0].requests[0]
    assert tokenizer.decode(cont) == " 1"


def test_every_item_gets_a_context_length_bucket(tiny_suite, tokenizer):
    from harness.engine.tasks import length_bucket

    assert [length_bucket(n) for n in (1, 512, 513, 1024, 2048, 2049)] == [
        "ctx<=512", "ctx<=512", "ctx<=1k", "ctx<=1k", "ctx<=2k", "ctx>2k"]  # fmt: skip
    for task in load_suite(tiny_suite).tasks:
        items = prepare(task, load_items(task), tokenizer, 0, load_items(task), seed=0)
        assert all(item.slices[-1] == "ctx<=512" for item in items)
        assert all(set(task.slices) <= set(item.slices) for item in items)


def test_encode_pair_moves_trailing_space_to_continuation(tokenizer):
    ctx, cont = encode_pair(tokenizer, "Answer: ", "yes", prefix=0)
    assert tokenizer.decode(ctx) == "Answer:" and tokenizer.decode(cont) == " yes"


def test_extract_answer():
    assert extract_answer(" 12 apples", r"-?\d+") == "12"
    assert extract_answer("x = -3.", r"=\s*(-?\d+)") == "-3"
    assert extract_answer("none", r"\d+") == ""
    assert extract_answer("  7 \n", None) == "7"


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


def test_greedy_match_is_true_exactly_when_the_gold_tokens_are_the_argmax(
    tiny_suite, tiny_model, tokenizer
):
    import dataclasses

    task = dataclasses.replace(load_suite(tiny_suite).tasks[2], metric="greedy_match")
    rows, _ = run_task(task, tiny_model, tokenizer)
    items = prepare(task, load_items(task), tokenizer, 0, load_items(task), seed=0)
    for row, item in zip(rows, items, strict=True):
        ctx, cont = item.requests[0]
        with torch.no_grad():
            logits = tiny_model(torch.tensor([ctx + cont])).logits[0]
        argmax = logits[len(ctx) - 1 : len(ctx) + len(cont) - 1].argmax(-1).tolist()
        assert row.correct == (argmax == cont)


def test_decoding_reuses_the_gold_pass_and_stays_exactly_greedy(
    tiny_suite, tiny_model, tokenizer, tmp_path
):
    """With gold answers equal to the model's own greedy output, no item needs decoding;
    with wrong golds every item decodes on; predictions equal plain greedy decoding."""
    import dataclasses

    task = dataclasses.replace(
        load_suite(tiny_suite).tasks[2], target_delimiter="", max_new_tokens=6, fewshot=0
    )
    items = prepare(task, load_items(task), tokenizer, 0, load_items(task), seed=0)
    greedy_ids = []
    for item in items:
        ids = list(item.prompt_ids)
        with torch.no_grad():
            for _ in range(task.max_new_tokens):
                ids.append(int(tiny_model(torch.tensor([ids])).logits[0, -1].argmax()))
        greedy_ids.append(ids[len(item.prompt_ids) :])
    greedy = [tokenizer.decode(g, skip_special_tokens=True).split("\n")[0] for g in greedy_ids]

    class Counting(Scorer):
        decoded: list = []

        def generate_ids(self, prompts, *args, **kwargs):
            self.decoded.extend(prompts)
            return super().generate_ids(prompts, *args, **kwargs)

    scorer = Counting(tiny_model, tokenizer.pad_token_id, batch_size=4, max_length=512)
    rows, _ = evaluate_task(task, items, scorer, tokenizer, "v", None)
    assert [r.prediction for r in rows] == greedy  # wrong golds: decoded on from the divergence
    assert 0 < len(scorer.decoded) <= len(items)

    own = [
        dataclasses.replace(item, requests=[(item.prompt_ids, g)])
        for item, g in zip(items, greedy_ids, strict=True)
    ]
    scorer.decoded.clear()
    rows, _ = evaluate_task(task, own, scorer, tokenizer, "v", None)
    assert [r.prediction for r in rows] == greedy and scorer.decoded == []  # read off the gold pass


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
