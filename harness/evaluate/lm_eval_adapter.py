"""lm-eval tasks as harness tasks. The only module that imports ``lm_eval``.

A suite task ``{kind: lm_eval, lm_eval: NAME_OR_YAML}`` runs through lm-eval's
``HFLM`` wrapping the in-memory variant model (no reload), offline, with per-sample
logging; each logged document becomes an :class:`ItemResult` row, so variants pair up
with the baseline item by item as native tasks do. lm-eval does not expose next-token
distributions, so ``kld`` and ``top1_agree`` stay empty for these rows.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

from harness.errors import InputError
from harness.metrics import get_metric
from harness.records import ItemResult, Task
from harness.yamlfile import read_yaml


def task_name(task: Task) -> tuple[str, Path | None]:
    """The lm-eval task name, and the folder to include when it is a local YAML file."""
    ref = task.lm_eval
    if ref.endswith((".yaml", ".yml")):
        path = Path(ref)
        spec = read_yaml(path, "lm-eval task")
        if not isinstance(spec, dict) or "task" not in spec:
            raise InputError(f"{path}: an lm-eval task file needs a 'task:' name")
        return str(spec["task"]), path.parent
    return ref, None


def run_samples(task: Task, model, tokenizer, *, limit: int | None, batch_size: int, max_length: int,
                seed: int) -> list[dict]:  # fmt: skip
    """Run the task with lm-eval on ``model`` and return its per-document samples."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    name, folder = task_name(task)
    manager = (
        TaskManager(include_path=str(folder), include_defaults=False) if folder else TaskManager()
    )
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=str(model.device),
              max_length=max_length)  # fmt: skip
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


def _item_id(sample: dict) -> str:
    """The document's own ``id`` field when it has one, else lm-eval's ``doc_id``."""
    doc = sample.get("doc")
    return str(doc["id"]) if isinstance(doc, dict) and "id" in doc else str(sample["doc_id"])


def _number(value) -> float:
    return float(value[0] if isinstance(value, list | tuple) else value)


def choose_filter(task: Task, samples: list[dict]) -> list[dict]:
    """The samples of one filter: lm-eval logs every document once per filter of the
    task's ``filter_list``; the task's ``lm_eval_filter`` picks one (default: the first),
    and the others are left out."""
    filters = list(dict.fromkeys(s.get("filter", "none") for s in samples))
    chosen = task.lm_eval_filter or (filters[0] if filters else "none")
    if filters and chosen not in filters:
        raise InputError(f"task {task.name!r}: lm-eval has no filter {chosen!r} for this task "
                         f"(it has: {', '.join(filters)})")  # fmt: skip
    return [s for s in samples if s.get("filter", "none") == chosen]


def to_rows(task: Task, samples: list[dict], variant: str) -> list[ItemResult]:
    """lm-eval samples -> one item row per document (of the chosen filter); the task's
    :class:`~harness.metrics.Metric` says what the logged value means."""
    metric = get_metric(task.metric)
    rows = []
    for sample in sorted(choose_filter(task, samples), key=lambda s: s["doc_id"]):
        if task.metric not in sample:
            known = sorted(k for k in sample if k not in ("doc", "doc_id", "target", "arguments", "resps", "metrics",
                                                          "filtered_resps", "filter", "doc_hash", "prompt_hash", "target_hash"))  # fmt: skip
            raise InputError(
                f"task {task.name!r}: lm-eval reports no metric {task.metric!r} (it has: {', '.join(known)})"
            )
        value = sample[task.metric]
        responses = sample.get("filtered_resps") or []
        lls = [float(r[0]) for r in responses if isinstance(r, list | tuple) and len(r) == 2]
        gold_ll = margin = None
        prediction = str(responses[0]) if responses and not lls else ""
        target = sample.get("target")
        if lls and isinstance(target, int) and 0 <= target < len(lls):
            gold_ll = lls[target]
            others = [ll for i, ll in enumerate(lls) if i != target]
            margin = gold_ll - max(others) if others else None
            prediction = str(max(range(len(lls)), key=lls.__getitem__))
        nll, units, score = -(gold_ll or 0.0), 0, math.nan
        if metric.perplexity:  # lm-eval logs (log-likelihood, words or bytes) per document
            nll, units = -float(value[0]), int(value[1])
        else:
            score = _number(value)
        rows.append(ItemResult(
            variant=variant, task=task.name, item_id=_item_id(sample), slices=task.slices,
            correct=score >= 0.5 if metric.outcome else None,
            correct_norm=(_number(sample["acc_norm"]) >= 0.5) if "acc_norm" in sample else None,
            score=score if not metric.perplexity else nll / max(units, 1), nll=nll,
            gold_logprob=-nll, n_tokens=units, kld=None, top1_agree=None,
            margin=margin, prediction=prediction, target=str(target),
        ))  # fmt: skip
    return rows
