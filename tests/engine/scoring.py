"""Scoring helpers shared by the engine's tests: plain-transformers references and a
one-call evaluation of a task."""

from __future__ import annotations

import json

import torch
import torch.nn.functional as F

from harness.data.suites import load_items
from harness.engine.scorer import ReferenceHead, Scorer
from harness.engine.tasks import evaluate_task, prepare
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
