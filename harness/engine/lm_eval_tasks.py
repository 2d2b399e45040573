"""lm-eval tasks on the harness's engine. The only module that imports ``lm_eval``.

A suite task ``{kind: lm_eval, lm_eval: NAME_OR_YAML}`` runs through
``lm_eval.simple_evaluate`` with :class:`NativeLM`, lm-eval's ``LM`` interface over the
harness's :class:`~harness.engine.scorer.Scorer`. lm-eval keeps what it owns — the
task's documents, prompts, few-shot examples, filters and metrics — and the scorer does
every forward pass, with the same batching and request grouping as native tasks. So the
rows of an lm-eval task carry what native rows carry: KL divergence and top-1 agreement
against the baseline (from the baseline's stored final hidden states), and a
context-length slice.

What is compared per document: every continuation token of its ``loglikelihood``
requests (the gold choice's, for a row's KLD), every token of its rolling windows, and
for ``generate_until`` the baseline's own greedy answer, which each variant scores
teacher-forced (``Reference.tokens``). Decoding is greedy; a task that samples is refused.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import torch
from lm_eval.api.model import LM

from harness.engine.kinds import TaskKind, register_kind
from harness.engine.scorer import Scored, Scorer
from harness.engine.tasks import divergence, encode_pair, length_bucket
from harness.errors import InputError
from harness.metrics import get_metric
from harness.records import ItemResult, Reference, Task
from harness.yamlfile import read_yaml

LOGGED = {"doc", "doc_id", "target", "arguments", "resps", "metrics", "filtered_resps", "filter",
          "doc_hash", "prompt_hash", "target_hash"}  # fmt: skip


def task_name(task: Task) -> tuple[str, Path | None]:
    """The lm-eval task name, and the folder to include when it is a local YAML file."""
    ref = task.source
    if ref.endswith((".yaml", ".yml")):
        path = Path(ref)
        spec = read_yaml(path, "lm-eval task")
        if not isinstance(spec, dict) or "task" not in spec:
            raise InputError(f"{path}: an lm-eval task file needs a 'task:' name")
        return str(spec["task"]), path.parent
    return ref, None


def declared_metric(path: Path, depth: int = 0) -> str | None:
    """The first metric of an lm-eval YAML's ``metric_list`` (following ``include:``)."""
    spec = read_yaml(path, "lm-eval task")
    if not isinstance(spec, dict):
        return None
    metrics = spec.get("metric_list")
    if (
        isinstance(metrics, list)
        and metrics
        and isinstance(metrics[0], dict)
        and "metric" in metrics[0]
    ):
        return str(metrics[0]["metric"])
    include = spec.get("include")
    if isinstance(include, str) and depth < 8 and (path.parent / include).is_file():
        return declared_metric(path.parent / include, depth + 1)
    return None


def item_id(doc, doc_id: int) -> str:
    """The document's own ``id`` field when it has one, else lm-eval's ``doc_id``."""
    return str(doc["id"]) if isinstance(doc, dict) and "id" in doc else str(doc_id)


class NativeLM(LM):
    """lm-eval's ``LM`` over a :class:`Scorer`. Without ``references`` it scores the
    baseline and keeps, per document, its final hidden states at every scored token
    (:attr:`made`); with them, every scored token is compared to the baseline's.
    :attr:`scored` holds each document's :class:`Scored` parts by request index."""

    def __init__(self, scorer: Scorer, tokenizer, prefix: int, references: dict[str, Reference] | None = None,
                 on_progress=None) -> None:  # fmt: skip
        super().__init__()
        self.scorer, self.tokenizer, self.prefix = scorer, tokenizer, prefix
        self.references, self.on_progress = references, on_progress
        self.scored: dict[str, dict[int, list[Scored]]] = {}
        self.lengths: dict[str, int] = {}  # tokens of each document's longest input
        self.made: dict[str, Reference] = {}

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def loglikelihood(self, requests) -> list[tuple[float, bool]]:
        pairs = [
            encode_pair(self.tokenizer, ctx, cont, self.prefix) if ctx else ([self.prefix], self._encode(cont))
            for ctx, cont in (r.args for r in requests)
        ]  # fmt: skip
        parts = self._score(requests, [[pair] for pair in pairs])
        return [(float(p[0].token_logprobs.sum()), p[0].greedy) for p in parts]

    def loglikelihood_rolling(self, requests) -> list[float]:
        from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

        windows = [
            [make_disjoint_window(w) for w in get_rolling_token_windows(
                token_list=self._encode(r.args[0]), prefix_token=self.prefix,
                max_seq_len=self.scorer.max_length, context_len=1)]
            for r in requests
        ]  # fmt: skip
        parts = self._score(requests, windows)
        return [sum(float(s.token_logprobs.sum()) for s in p) for p in parts]

    def generate_until(self, requests) -> list[str]:
        from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs

        eos = (
            self.tokenizer.decode([self.tokenizer.eos_token_id])
            if self.tokenizer.eos_token_id is not None
            else None
        )
        texts: list[str] = [""] * len(requests)
        generated: list[list[int]] = [[] for _ in requests]
        groups: dict[tuple, list[int]] = {}
        prompts = []
        for n, request in enumerate(requests):
            context, settings = request.args
            kwargs = normalize_gen_kwargs(dict(settings), 256)
            if kwargs.get("do_sample") or float(kwargs.get("temperature") or 0) > 0:
                raise InputError("lm-eval task asks for sampled generation; the harness decodes "
                                 "greedily (set do_sample: false in its generation_kwargs)")  # fmt: skip
            until = tuple(handle_stop_sequences(kwargs.get("until"), eos=eos))
            budget = int(kwargs["max_gen_toks"])
            if budget >= self.scorer.max_length:
                raise InputError(f"lm-eval task asks for {budget} new tokens; the model's context is "
                                 f"{self.scorer.max_length}")  # fmt: skip
            prompts.append(
                self._encode(context)[-(self.scorer.max_length - budget) :] or [self.prefix]
            )
            groups.setdefault((until, budget), []).append(n)
        for (until, budget), members in groups.items():
            outputs = self.scorer.generate_ids([prompts[n] for n in members], budget, until, self.tokenizer,
                                               on_batch=self.on_progress)  # fmt: skip
            for n, tokens in zip(members, outputs, strict=True):
                generated[n] = tokens
                texts[n] = self.scorer.finish_text(tokens, until, self.tokenizer)
        # compared on the baseline's own answer: the variant scores it teacher-forced
        paths = []
        for n, request in enumerate(requests):
            ref = self._reference(request)
            path = (
                ref.tokens.tolist() if ref is not None and ref.tokens is not None else generated[n]
            )
            paths.append([(prompts[n], path)] if path else [])
        self._score(requests, paths)
        return texts

    def _reference(self, request) -> Reference | None:
        return (
            self.references.get(item_id(request.doc, request.doc_id))
            if self.references is not None
            else None
        )

    def _score(
        self, requests, windows: list[list[tuple[list[int], list[int]]]]
    ) -> list[list[Scored]]:
        """Score every request's windows; compare each to its slice of the document's
        reference (the document's requests in index order, their windows in order)."""
        by_doc: dict[str, list[int]] = {}  # document -> its requests, in index order
        for n in sorted(range(len(requests)), key=lambda n: (requests[n].doc_id, requests[n].idx)):
            by_doc.setdefault(item_id(requests[n].doc, requests[n].doc_id), []).append(n)
        flat, refs, owners = [], [], []
        for key, members in by_doc.items():
            reference = self.references.get(key) if self.references is not None else None
            if self.references is not None and reference is None:
                raise InputError(f"lm-eval document {key!r} has no baseline reference; "
                                 "rerun the baseline (delete its rows) first")  # fmt: skip
            start = 0
            for n in members:
                for ctx, cont in windows[n]:
                    flat.append((ctx, cont))
                    owners.append(n)
                    refs.append(None if reference is None else Reference(
                        hidden=reference.hidden[start : start + len(cont)], argmax=reference.argmax[start : start + len(cont)]))  # fmt: skip
                    start += len(cont)
                # a rolling text counts all its tokens, other requests their longest input
                size = (
                    start
                    if len(windows[n]) > 1
                    else max((len(c) + len(t) for c, t in windows[n]), default=0)
                )
                self.lengths[key] = max(self.lengths.get(key, 0), size)
        scored = self.scorer.score(flat, references=refs if self.references is not None else None,
                                   keep_hidden=self.references is None, on_batch=self.on_progress)  # fmt: skip
        parts: list[list[Scored]] = [[] for _ in requests]
        for n, s in zip(owners, scored, strict=True):
            parts[n].append(s)
        for key, members in by_doc.items():
            for n in members:
                self.scored.setdefault(key, {})[requests[n].idx] = parts[n]
            if self.references is None and any(
                parts[n] for n in members
            ):  # the baseline's reference
                self.made[key] = Reference(
                    hidden=torch.cat([s.hidden for n in members for s in parts[n]]),
                    argmax=torch.cat([s.argmax for n in members for s in parts[n]]).int(),
                    tokens=torch.tensor(
                        [t for n in members for _, cont in windows[n] for t in cont],
                        dtype=torch.int32,
                    ),
                )
        return parts


def evaluate_lm_eval(task: Task, scorer: Scorer, tokenizer, prefix: int, variant: str,
                     reference: dict[str, Reference] | None, *, limit: int | None, seed: int,
                     on_progress=None) -> tuple[list[ItemResult], dict[str, Reference]]:  # fmt: skip
    """Run the lm-eval task on the scorer's model: its rows, and (for the baseline, with
    no ``reference``) the reference every later variant is compared to."""
    lm = NativeLM(scorer, tokenizer, prefix, reference, on_progress)
    samples = run_samples(task, lm, limit=limit, seed=seed)
    return to_rows(task, samples, variant, lm), lm.made


def run_samples(task: Task, lm: LM, *, limit: int | None, seed: int) -> list[dict]:
    """Run the task with lm-eval on ``lm`` (offline) and return its per-document samples."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import lm_eval
    from lm_eval.tasks import TaskManager

    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    import datasets

    datasets.disable_progress_bars()  # the harness shows its own progress
    name, folder = task_name(task)
    manager = (
        TaskManager(include_path=str(folder), include_defaults=False) if folder else TaskManager()
    )
    try:
        results = lm_eval.simple_evaluate(
            model=lm, tasks=[name], task_manager=manager, limit=limit, log_samples=True, bootstrap_iters=0,
            random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed, fewshot_random_seed=seed,
        )  # fmt: skip
    except (KeyError, ValueError, FileNotFoundError) as exc:
        raise InputError(f"task {task.name!r}: lm-eval could not run {name!r}: {exc}") from None
    samples = (results or {}).get("samples", {}).get(name)
    if samples is None:
        raise InputError(f"task {task.name!r}: lm-eval returned no samples for {name!r}")
    return samples


def _number(value) -> float:
    return float(value[0] if isinstance(value, list | tuple) else value)


def choose_filter(task: Task, samples: list[dict]) -> list[dict]:
    """The samples of one filter: lm-eval logs every document once per filter of the
    task's ``filter_list``; the suite's ``lm_eval_filter`` picks one (default: the first),
    and the others are left out."""
    filters = list(dict.fromkeys(s.get("filter", "none") for s in samples))
    chosen = task.answer_filter or (filters[0] if filters else "none")
    if filters and chosen not in filters:
        raise InputError(f"task {task.name!r}: lm-eval has no filter {chosen!r} for this task "
                         f"(it has: {', '.join(filters)})")  # fmt: skip
    return [s for s in samples if s.get("filter", "none") == chosen]


def _compared(parts: dict[int, list[Scored]], gold: int | None) -> list[Scored]:
    """The parts a row's KLD and top-1 cover: the gold choice's, else all of them."""
    if gold is not None and gold in parts:
        return parts[gold]
    return [s for idx in sorted(parts) for s in parts[idx]]


def to_rows(
    task: Task, samples: list[dict], variant: str, lm: NativeLM | None = None
) -> list[ItemResult]:
    """lm-eval samples -> one item row per document (of the chosen filter); the task's
    :class:`~harness.metrics.Metric` says what the logged value means, ``lm`` adds what
    the engine measured (KLD, top-1, context length)."""
    metric = get_metric(task.metric)
    rows = []
    for sample in sorted(choose_filter(task, samples), key=lambda s: s["doc_id"]):
        if task.metric not in sample:
            known = sorted(k for k in sample if k not in LOGGED)
            raise InputError(f"task {task.name!r}: lm-eval reports no metric {task.metric!r} "
                             f"(it has: {', '.join(known)})")  # fmt: skip
        value = sample[task.metric]
        responses = sample.get("filtered_resps") or []
        lls = [float(r[0]) for r in responses if isinstance(r, list | tuple) and len(r) == 2]
        gold_ll = margin = gold = None
        prediction = str(responses[0]) if responses and not lls else ""
        target = sample.get("target")
        if lls and isinstance(target, int) and 0 <= target < len(lls):
            gold, gold_ll = target, lls[target]
            others = [ll for i, ll in enumerate(lls) if i != target]
            margin = gold_ll - max(others) if others else None
            prediction = str(max(range(len(lls)), key=lls.__getitem__))
        nll, units, score = -(gold_ll or 0.0), 0, math.nan
        if metric.perplexity:  # lm-eval logs (log-likelihood, words or bytes) per document
            nll, units = -float(value[0]), int(value[1])
        else:
            score = _number(value)
        key = item_id(sample.get("doc"), sample["doc_id"])
        scored = lm.scored.get(key, {}) if lm is not None else {}
        parts = _compared(scored, gold)
        compared = parts and all(p.kld is not None for p in parts)
        measured = divergence(parts) if compared else {"kld": None, "top1_agree": None}
        nonfinite = sum(s.nonfinite for request in scored.values() for s in request)
        slices = (*task.slices, length_bucket(lm.lengths[key])) if scored else task.slices
        correct = score >= 0.5 if metric.outcome else None
        if nonfinite and correct is not None:  # never right by accident of a broken forward pass
            correct = False
        rows.append(ItemResult(
            variant=variant, task=task.name, item_id=key, slices=slices, correct=correct,
            correct_norm=(_number(sample["acc_norm"]) >= 0.5) if "acc_norm" in sample else None,
            score=score if not metric.perplexity else nll / max(units, 1), nll=nll,
            gold_logprob=-nll, n_tokens=units or sum(len(s.token_logprobs) for s in parts),
            margin=margin, prediction=prediction, target=str(target), nonfinite=nonfinite, **measured,
        ))  # fmt: skip
    return rows


def resolve(ref: str, folder: Path, where: str) -> tuple[str, str | None]:
    """A suite's ``lm_eval:`` entry: a local YAML file (resolved against the suite's
    folder; its first declared metric) or the name of a task lm-eval knows."""
    if not ref.endswith((".yaml", ".yml")):
        return ref, None
    local = (folder / ref).resolve()
    if not local.is_file():
        raise InputError(f"{where}: lm-eval task file not found: {local}")
    return str(local), declared_metric(local)


register_kind(TaskKind("lm_eval", default_metric="acc", source_key="lm_eval",
                       keys={"lm_eval": "source", "lm_eval_filter": "answer_filter"},
                       resolve=resolve, evaluate=evaluate_lm_eval))  # fmt: skip
