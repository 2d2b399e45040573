"""lm-eval tasks on qharness's engine (NativeLM) against lm-eval's own HFLM, on the
default model: the same documents through ``lm_eval.simple_evaluate`` both ways,
compared document by document, with the time each takes.

    python bench/lm_eval_parity.py [--limit 40] [--threads 1]

The tasks are the default suite's, exported to lm-eval YAML by bench/lm_eval_export.py
(a perplexity text as loglikelihood_rolling, a multiple-choice and a generation task).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from lm_eval_export import export_suite  # noqa: E402

from harness.data.suites import load_suite  # noqa: E402
from harness.engine.lm_eval_tasks import NativeLM, run_samples  # noqa: E402
from harness.engine.scorer import Scorer  # noqa: E402
from harness.model.load import load_model, prefix_token_id  # noqa: E402
from harness.records import ModelSpec, Task  # noqa: E402

TASKS = ("general_text", "compare_mc", "add_1digit")


def _value(resp) -> float | str:
    while isinstance(resp, list | tuple):
        resp = resp[0]
    return resp


def _close(a, b) -> bool:
    """Equal, or for (log-likelihood, words) pairs equal words and log-likelihoods within 1e-5."""
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float):
        return abs(a - b) <= 1e-5 * max(1.0, abs(b))
    return a == b


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    model, tokenizer = load_model(ModelSpec("default"))
    suite = load_suite("tasks/default.yaml")
    folder = Path(tempfile.mkdtemp())
    chosen = [t for t in suite.tasks if t.name in TASKS]
    names = export_suite(
        replace(suite, tasks=tuple(chosen)), folder, {t.name: args.limit for t in chosen}
    )
    max_length = 2048
    print(
        "| task | output type | documents | metric equal | max abs. Δ log-likelihood | answers equal | HFLM s | NativeLM s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name in names:
        manager = TaskManager(include_path=str(folder), include_defaults=False)
        start = time.perf_counter()
        hf = lm_eval.simple_evaluate(model=HFLM(pretrained=model, tokenizer=tokenizer, batch_size=8, max_length=max_length),
                                     tasks=[name], task_manager=manager, log_samples=True, bootstrap_iters=0,
                                     random_seed=0, numpy_random_seed=0, torch_random_seed=0, fewshot_random_seed=0)  # fmt: skip
        hf_seconds = time.perf_counter() - start
        task = Task(name=name, kind="lm_eval", data=None, source=str(folder / f"{name}.yaml"))
        lm = NativeLM(Scorer(model, tokenizer.pad_token_id, batch_size=8, max_length=max_length), tokenizer,
                      prefix_token_id(tokenizer))  # fmt: skip
        start = time.perf_counter()
        ours = run_samples(task, lm, limit=None, seed=0)
        native_seconds = time.perf_counter() - start
        theirs = {(s["doc_id"], s["filter"]): s for s in hf["samples"][name]}
        ours = {(s["doc_id"], s["filter"]): s for s in ours}
        metric = ours[next(iter(ours))]["metrics"][0]
        same_metric = sum(_close(ours[k][metric], theirs[k][metric]) for k in ours)
        gaps, same_answer = [], 0
        for key, mine in ours.items():
            a = [_value(r) for r in mine["resps"]]
            b = [_value(r) for r in theirs[key]["resps"]]
            if isinstance(a[0], float):
                gaps += [abs(x - y) for x, y in zip(a, b, strict=True)]
            same_answer += mine["filtered_resps"] == theirs[key]["filtered_resps"] or isinstance(
                a[0], float
            )
        output = hf["configs"][name]["output_type"]
        gap = f"{max(gaps):.2g}" if gaps else "–"
        print(f"| {name} | {output} | {len(ours)} | {same_metric}/{len(ours)} ({metric}) | {gap} | "
              f"{same_answer}/{len(ours)} | {hf_seconds:.1f} | {native_seconds:.1f} |")  # fmt: skip


if __name__ == "__main__":
    main()
