"""The scoring engine against independent plain-transformers computations."""

from __future__ import annotations

import math

import pytest
import torch

from harness.data.suites import load_items, load_suite
from harness.engine.scorer import Scorer
from harness.engine.tasks import (
    encode_pair,
    evaluate_task,
    extract_answer,
    prepare,
    rolling_requests,
)
from tests.engine.scoring import TEXT, plain_nll, ppl_task, run_task, strided_nll


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
