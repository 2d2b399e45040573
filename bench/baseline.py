"""Measure the base model on a suite: the metric per task and slice, and the wall time.

    python bench/baseline.py tasks/long_context.yaml [--model default] [--threads 1]

Prints a Markdown table (the one in tasks/README.md) — a task whose baseline sits at
chance cannot show quantization damage, so check this before shipping a task.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.data.suites import load_suite  # noqa: E402
from harness.engine.scorer import Scorer  # noqa: E402
from harness.engine.tasks import evaluate_task, prepare_suite  # noqa: E402
from harness.metrics import get_metric  # noqa: E402
from harness.model.load import load_model, prefix_token_id  # noqa: E402
from harness.records import ModelSpec  # noqa: E402
from harness.store import rows_to_frame  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suite", type=Path)
    parser.add_argument("--model", default="default")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, tokenizer = load_model(ModelSpec(args.model))
    scorer = Scorer(
        model,
        tokenizer.pad_token_id,
        batch_size=8,
        max_length=model.config.max_position_embeddings,
    )
    print("| task | slice | n | metric | baseline | seconds |\n|---|---|---|---|---|---|")
    suite = load_suite(args.suite)
    # prepared as `qharness run` prepares them
    every = prepare_suite(suite, tokenizer, prefix_token_id(tokenizer), seed=0)
    for task in (t for t in suite.tasks if t.name in every):
        prepared = every[task.name]
        start = time.perf_counter()
        rows, _ = evaluate_task(task, prepared, scorer, tokenizer, "baseline", None)
        seconds = time.perf_counter() - start
        frame = rows_to_frame(rows)
        frame["slice"] = frame["slices"].map(lambda s: ["all", *s])
        for slice_, group in frame.explode("slice").groupby("slice", sort=False):
            value = get_metric(task.metric).value(group)
            shown = f"{value:.2f}" if task.metric == "perplexity" else f"{value:.0%}"
            print(
                f"| {task.name} | {slice_} | {len(group)} | {task.metric} | {shown} | {seconds:.0f} |"
            )


if __name__ == "__main__":
    main()
