"""Items -> requests -> :class:`ItemResult` rows, for each task kind.

* ``perplexity``: the text is scored in rolling windows of ``task.window`` tokens; each
  window after the first adds ``stride`` new tokens, so every token has at least
  ``window - stride`` tokens of context. The first token is scored after the BOS token.
* ``multiple_choice``: the log-likelihood of each choice after the context (``acc``),
  also divided by the choice's length in characters (``acc_norm``), as lm-eval does.
* ``generate``: greedy decoding until a stop string or ``max_new_tokens``; exact match
  of the (regex-extracted, stripped) output against the target. With the metric
  ``greedy_match`` no decoding runs: an item is correct when every gold-answer token is
  the greedy choice (one forward pass; lm-eval's ``is_greedy``), which suits long
  prompts whose answer is short and unambiguous.

For every kind, KL divergence and top-1 agreement compare the variant to the baseline
on the scored tokens: the whole text, the gold choice, or the gold target.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass, field, replace

import torch

from harness.engine.kinds import TaskKind, kind_of, register_kind
from harness.engine.scorer import Scored, Scorer
from harness.records import ItemResult, Reference, Suite, Task

LENGTH_BUCKETS = ((512, "ctx<=512"), (1024, "ctx<=1k"), (2048, "ctx<=2k"))
LONGEST_BUCKET = "ctx>2k"


@dataclass
class PreparedItem:
    """One item rendered and tokenized: its requests and what scoring needs."""

    item_id: str
    slices: tuple[str, ...]
    requests: list[tuple[list[int], list[int]]]  # request 0 .. holds the scored tokens
    target: str
    gold: int = 0  # index of the gold request (multiple_choice)
    choice_lengths: list[int] = field(default_factory=list)
    prompt_ids: list[int] = field(default_factory=list)  # generate


def rolling_requests(
    tokens: list[int], prefix: int, window: int, stride: int
) -> list[tuple[list[int], list[int]]]:
    """Split a token sequence into scoring windows; every token is scored exactly once."""
    seq = [prefix] + tokens
    n = len(seq) - 1
    requests, done = [], 0
    while done < n:
        end = min(done + (window if done == 0 else stride), n)
        start = max(0, end - window)
        requests.append((seq[start : done + 1], seq[done + 1 : end + 1]))
        done = end
    return requests


def encode_pair(
    tokenizer, context: str, continuation: str, prefix: int
) -> tuple[list[int], list[int]]:
    """Tokenize context+continuation together and split at the context's length, moving
    trailing context whitespace into the continuation (lm-eval's convention)."""
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    whole = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
    ctx = tokenizer(context, add_special_tokens=False)["input_ids"]
    ctx_ids, cont_ids = whole[: len(ctx)], whole[len(ctx) :]
    return (ctx_ids or [prefix]), cont_ids


def _fewshot_block(task: Task, item: dict, pool: list[dict], seed: int) -> str:
    if task.fewshot == 0:
        return ""
    rng = random.Random(f"{seed}:{task.name}:{item['id']}")
    candidates = [ex for ex in pool if ex["id"] != item["id"]]
    shots = rng.sample(candidates, min(task.fewshot, len(candidates)))
    return "".join(_render_example(task, ex) + task.fewshot_delimiter for ex in shots)


def _render_example(task: Task, example: dict) -> str:
    prompt = task.prompt.format(**example)
    if task.kind == "multiple_choice":
        answer = example[task.choices_field][example[task.answer_field]]
    else:
        answer = task.target.format(**example)
    return prompt + task.target_delimiter + answer


def prepare(
    task: Task, items: list[dict], tokenizer, prefix: int, pool: list[dict], seed: int
) -> list[PreparedItem]:
    """Render and tokenize ``items`` for ``task``; each item's slices are the task's, its
    own, and its context-length bucket (see :func:`length_bucket`)."""
    prepared = [_prepare_one(task, item, tokenizer, prefix, pool, seed) for item in items]
    for item in prepared:
        ctx, cont = item.requests[item.gold]
        length = (
            sum(len(c) for _, c in item.requests)
            if task.kind == "perplexity"
            else len(ctx) + len(cont)
        )
        item.slices = (*item.slices, length_bucket(length))
    return prepared


def item_limit(limit: int | None, task: Task) -> int | None:
    """The number of items to evaluate: the smaller of ``--limit`` and the task's ``limit``."""
    return min([n for n in (limit, task.limit) if n], default=None)


def prepare_suite(suite: Suite, tokenizer, prefix: int, seed: int, limit: int | None = None,
                  items: dict[str, list[dict]] | None = None) -> dict[str, list[PreparedItem]]:  # fmt: skip
    """Every itemized task of ``suite`` prepared: its first ``min(limit, task.limit)``
    items, few-shot examples drawn from ``fewshot_data`` or the task's other items.
    ``items`` are the tasks' loaded items, when the caller has them already."""
    from harness.data.suites import load_items  # (suites finds the kinds this module registers)

    prepared = {}
    for task in suite.tasks:
        if not kind_of(task).itemized:
            continue  # the kind loads and renders its own documents
        loaded = items[task.name] if items is not None else load_items(task)
        pool = (
            load_items(replace(task, data=task.fewshot_data, fewshot_data=None))
            if task.fewshot_data
            else loaded
        )
        chosen = loaded[: item_limit(limit, task)]
        prepared[task.name] = prepare(task, chosen, tokenizer, prefix, pool, seed)
    return prepared


def length_bucket(tokens: int) -> str:
    """The automatic context-length slice of an item with ``tokens`` input tokens."""
    for limit, name in LENGTH_BUCKETS:
        if tokens <= limit:
            return name
    return LONGEST_BUCKET


def _prepare_one(
    task: Task, item: dict, tokenizer, prefix: int, pool: list[dict], seed: int
) -> PreparedItem:
    """One item rendered and tokenized (slices: the task's and the item's own)."""
    slices = tuple(dict.fromkeys(task.slices + tuple(item.get("slices", ()))))
    if task.kind == "perplexity":
        tokens = tokenizer(item[task.text_field], add_special_tokens=False)["input_ids"]
        stride = task.stride or max(1, task.window // 2)
        requests = rolling_requests(tokens, prefix, task.window, stride)
        return PreparedItem(item["id"], slices, requests, target="")
    context = _fewshot_block(task, item, pool, seed) + task.prompt.format(**item)
    if task.kind == "multiple_choice":
        choices = [str(c) for c in item[task.choices_field]]
        requests = [
            encode_pair(tokenizer, context, task.target_delimiter + c, prefix) for c in choices
        ]
        gold = item[task.answer_field]
        return PreparedItem(item["id"], slices, requests, target=choices[gold], gold=gold,
                            choice_lengths=[len(c) for c in choices])  # fmt: skip
    target = task.target.format(**item)
    request = encode_pair(tokenizer, context, task.target_delimiter + target, prefix)
    prompt_ids = tokenizer(context, add_special_tokens=False)["input_ids"] or [prefix]
    return PreparedItem(item["id"], slices, [request], target=target, prompt_ids=prompt_ids)


def scored_positions(task: Task, item: PreparedItem) -> list[int]:
    """Which of the item's requests carry the scored tokens (for KLD and the reference)."""
    if task.kind == "perplexity":
        return list(range(len(item.requests)))
    return [item.gold]


def extract_answer(text: str, regex: str | None) -> str:
    if regex:
        match = re.search(regex, text)
        if not match:
            return ""
        text = match.group(1) if match.groups() else match.group(0)
    return text.strip()


def evaluate_task(
    task: Task,
    items: list[PreparedItem],
    scorer: Scorer,
    tokenizer,
    variant: str,
    reference: dict[str, Reference] | None,
    on_progress=None,
) -> tuple[list[ItemResult], dict[str, Reference]]:
    """Score ``items`` with the scorer's model. Without a ``reference`` (the baseline) it
    also returns this model's final hidden states at each item's scored tokens, the
    reference for every later variant; with one, KLD, top-1 agreement and the change of
    the gold token's probability are filled in, per item and per token."""
    flat, owners = [], []
    for n, item in enumerate(items):
        for r, request in enumerate(item.requests):
            flat.append(request)
            owners.append((n, r))
    refs = None
    if reference is not None:
        refs = [
            _slice_reference(reference[items[n].item_id], task, items[n], r)
            if r in scored_positions(task, items[n])
            else None
            for n, r in owners
        ]
    scored = scorer.score(flat, references=refs, keep_hidden=reference is None, on_batch=on_progress,
                          next_token=task.decodes)  # fmt: skip
    by_item: list[list[Scored]] = [[] for _ in items]
    for (n, _), s in zip(owners, scored, strict=True):
        by_item[n].append(s)
    generations = (
        decode_greedy(task, items, by_item, scorer, tokenizer, on_progress) if task.decodes else []
    )

    rows, hiddens = [], {}
    for n, item in enumerate(items):
        parts = [by_item[n][r] for r in scored_positions(task, item)]
        logprobs = torch.cat([p.token_logprobs for p in parts])
        if reference is None:
            hiddens[item.item_id] = Reference(hidden=torch.cat([p.hidden for p in parts]),
                                              argmax=torch.cat([p.argmax for p in parts]).int())  # fmt: skip
        nll = -float(logprobs.sum())
        n_tokens = int(logprobs.numel())
        measured = divergence(parts) if reference is not None else {"kld": None, "top1_agree": None}
        correct = correct_norm = margin = None
        prediction = ""
        if task.kind == "multiple_choice":
            lls = [float(s.token_logprobs.sum()) for s in by_item[n]]
            normed = [
                ll / max(length, 1) for ll, length in zip(lls, item.choice_lengths, strict=True)
            ]
            choice = max(range(len(lls)), key=lls.__getitem__)
            correct = choice == item.gold
            correct_norm = max(range(len(normed)), key=normed.__getitem__) == item.gold
            others = [ll for i, ll in enumerate(lls) if i != item.gold]
            margin = lls[item.gold] - max(others)
            prediction = str(choice)
        elif task.metric == "greedy_match":  # the gold answer is what greedy decoding yields
            correct = all(p.greedy for p in parts)
            prediction = item.target if correct else ""
        elif task.kind == "generate":
            prediction = generations[n]
            correct = extract_answer(prediction, task.answer_regex) == item.target.strip()
        nonfinite = sum(s.nonfinite for s in by_item[n])
        if nonfinite and correct is not None:  # never right by accident of a broken forward pass
            correct, correct_norm = False, None if correct_norm is None else False
        score = nll / n_tokens if task.kind == "perplexity" else float(correct)
        rows.append(ItemResult(
            variant=variant, task=task.name, item_id=item.item_id, slices=item.slices, correct=correct,
            correct_norm=correct_norm, score=score, nll=nll, gold_logprob=-nll, n_tokens=n_tokens,
            margin=margin, prediction=prediction, target=item.target, nonfinite=nonfinite, **measured,
        ))  # fmt: skip
    return rows, hiddens


def divergence(parts: list[Scored]) -> dict:
    """An item's comparison with the baseline over its scored tokens: mean KLD and top-1
    agreement, and the KLD and gold-probability change of every token."""
    kld = torch.cat([p.kld for p in parts])
    return {"kld": float(kld.mean()), "top1_agree": float(torch.cat([p.top1 for p in parts]).double().mean()),
            "kld_tokens": tuple(kld.float().tolist()),
            "dp_tokens": tuple(torch.cat([p.dp for p in parts]).float().tolist())}  # fmt: skip


def decode_greedy(task: Task, items: list[PreparedItem], by_item, scorer: Scorer, tokenizer,
                  on_progress=None) -> list[str]:  # fmt: skip
    """Greedy generations, reusing the gold-answer pass: an item whose greedy answer
    follows the gold one to a stop string needs no decoding at all, the others are
    decoded on from where they diverged (exactly what greedy decoding from the prompt
    would have produced)."""
    known, pending = [], []
    for n, item in enumerate(items):
        ctx, gold = item.requests[0]
        tokens, done = [], False
        if ctx == item.prompt_ids:  # the teacher-forced row starts with the decoding prompt
            tokens, done = scorer.greedy_from_scores(
                by_item[n][0], gold, task.max_new_tokens, task.stop, tokenizer
            )
        known.append(tokens)
        if not done:
            pending.append(n)
    budget = max((task.max_new_tokens - len(known[n]) for n in pending), default=0)
    prompts = [items[n].prompt_ids + known[n] for n in pending]
    rest = (
        scorer.generate_ids(prompts, budget, task.stop, tokenizer, on_batch=on_progress)
        if pending
        else []
    )
    for n, tokens in zip(pending, rest, strict=True):
        known[n] = known[n] + tokens[: task.max_new_tokens - len(known[n])]
    if on_progress is not None and len(items) > len(pending):
        on_progress(len(items) - len(pending))
    return [scorer.finish_text(tokens, task.stop, tokenizer) for tokens in known]


def _slice_reference(ref: Reference, task: Task, item: PreparedItem, r: int) -> Reference:
    """The rows of an item's stored reference that belong to its request ``r``."""
    positions = scored_positions(task, item)
    start = sum(len(item.requests[p][1]) for p in positions[: positions.index(r)])
    end = start + len(item.requests[r][1])
    return Reference(hidden=ref.hidden[start:end], argmax=ref.argmax[start:end])


def perplexity(nll_sum: float, n_tokens: int) -> float:
    return math.exp(nll_sum / n_tokens) if n_tokens else float("nan")


for _kind in (
    TaskKind("perplexity", default_metric="perplexity", metrics=("perplexity",)),
    TaskKind("multiple_choice", default_metric="acc", metrics=("acc", "acc_norm")),
    TaskKind("generate", default_metric="exact_match", metrics=("exact_match", "greedy_match")),
):
    register_kind(_kind)
