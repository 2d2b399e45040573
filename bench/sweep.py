"""Sweep benchmark (`make bench`): the harness against the forward-pass floor and against
lm-eval, on the default model and suite, in one process so the ratios hold on a noisy
machine. Prints the figures and writes them to bench/results.json.

- harness: `qharness run` (baseline + rtn at 8/4/3/2) and its analysis, minus the model
  load; its peak resident memory over the fp32 model's size; again with --adaptive.
- floor: bare batched forward passes over the distinct token rows the same work needs
  (equal rows grouped, as the harness and lm-eval group them), plus greedy decoding for
  tasks that decode, for the same variants; nothing else.
- peer: lm-eval once per variant on the same tasks (the suite exported as lm-eval YAML,
  bench/lm_eval_export.py), as a user would run it today: accuracy only.

    python bench/sweep.py [--threads 1] [--bits 8,4,3,2] [--skip-peer] [--skip-adaptive]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
REPO = Path(__file__).resolve().parents[1]


def harness_sweep(spec_args: dict, out: Path, adaptive: bool) -> dict:
    from harness.analysis.analyse import analyse
    from harness.records import RunSpec
    from harness.report import write_analysis
    from harness.run.runner import run

    # start afresh: a stored run of unchanged scoring code would be resumed, not timed
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    store = run(RunSpec(out=out, adaptive=adaptive, **spec_args), progress=False)
    swept = time.perf_counter()
    write_analysis(store, analyse(store))
    done = time.perf_counter()
    manifest = store.manifest()
    load = manifest["timings"]["load_model"]
    saved = manifest.get("adaptive", {})
    return {
        "seconds": round(done - start - load, 1),
        "evaluation_seconds": round(swept - start - load, 1),
        "analysis_seconds": round(done - swept, 1),
        "model_load_seconds": load,
        "peak_rss_mib": manifest.get("peak_rss_mib"),
        "items_evaluated": sum(r["evaluated"] for r in saved.values()) if saved else None,
        "items_total": sum(r["of"] or 0 for r in saved.values()) if saved else None,
    }


def prepared_tasks(suite, tokenizer, seed: int = 0):
    """Each itemized task with its items, prepared as ``qharness run`` prepares them."""
    from harness.engine.tasks import prepare_suite
    from harness.model.load import prefix_token_id

    prepared = prepare_suite(suite, tokenizer, prefix_token_id(tokenizer), seed)
    return {task.name: (task, prepared[task.name]) for task in suite.tasks if task.name in prepared}


def floor_pass(model, tokenizer, tasks, batch_size: int, max_length: int) -> float:
    """Seconds of bare forward passes (and decoding) for one variant, task by task as the
    harness batches them."""
    from harness.engine.scorer import Scorer

    scorer = Scorer(model, tokenizer.pad_token_id, batch_size=batch_size, max_length=max_length)
    seconds = 0.0
    for task, items in tasks.values():
        rows: dict[tuple[int, ...], int] = {}
        for item in items:
            for ctx, cont in item.requests:
                row = tuple((ctx + cont)[:-1][-max_length:])
                rows[row] = max(rows.get(row, 0), len(cont))
        unique = list(rows)
        start = time.perf_counter()
        for batch in scorer._batches([len(r) for r in unique]):
            width = max(len(unique[b]) for b in batch)
            ids = torch.full((len(batch), width), tokenizer.pad_token_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for row, b in enumerate(batch):
                ids[row, width - len(unique[b]) :] = torch.tensor(unique[b])
                mask[row, width - len(unique[b]) :] = 1
            model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(1) - 1).clamp(min=0),
                  logits_to_keep=max(rows[unique[b]] for b in batch), use_cache=False)  # fmt: skip
        if task.decodes:
            scorer.generate_ids(
                [item.prompt_ids for item in items], task.max_new_tokens, task.stop, tokenizer
            )
        seconds += time.perf_counter() - start
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--suite", type=Path, default=REPO / "tasks" / "default.yaml")
    parser.add_argument("--bits", default="8,4,3,2")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--work", type=Path, default=Path("/tmp/qharness-bench"))
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results.json")
    parser.add_argument("--skip-peer", action="store_true", help="do not run lm-eval")
    parser.add_argument(
        "--skip-adaptive", action="store_true", help="do not run the --adaptive sweep"
    )
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    torch.set_num_threads(args.threads)

    from harness.data.suites import load_suite
    from harness.model.load import load_model, weight_files
    from harness.quant import make_config, quantize_
    from harness.quant.master import MasterCopy
    from harness.records import ModelSpec, Variant

    bits = [int(b) for b in args.bits.split(",")]
    configs = [make_config("rtn", bits=b) for b in bits]
    spec_args = {"model": ModelSpec("default"), "suite_path": args.suite,
                 "variants": tuple(Variant(c.variant_name, c) for c in configs),
                 "threads": args.threads, "batch_size": args.batch_size}  # fmt: skip
    figures: dict = {
        "threads": args.threads,
        "batch_size": args.batch_size,
        "variants": ["baseline", *(v.name for v in spec_args["variants"])],
    }

    print("harness sweep ...", file=sys.stderr)
    figures["harness"] = harness_sweep(spec_args, args.work / "harness", adaptive=False)
    if not args.skip_adaptive:
        print("harness sweep, --adaptive ...", file=sys.stderr)
        figures["harness_adaptive"] = harness_sweep(
            spec_args, args.work / "adaptive", adaptive=True
        )

    model, tokenizer = load_model(ModelSpec("default"))
    master = MasterCopy(model, weight_files(ModelSpec("default")))
    fp32_mib = sum(p.numel() for p in model.parameters()) * 4 / 2**20
    suite = load_suite(args.suite)
    tasks = prepared_tasks(suite, tokenizer)
    max_length = int(model.config.max_position_embeddings)

    print("floor ...", file=sys.stderr)
    floor = {}
    for config in [None, *configs]:
        master.restore()
        if config is not None:
            quantize_(model, config)
        floor[config.variant_name if config else "baseline"] = round(
            floor_pass(model, tokenizer, tasks, args.batch_size, max_length), 1
        )
    figures["floor"] = {"seconds": round(sum(floor.values()), 1), "per_variant": floor}

    if not args.skip_peer:
        print("lm-eval ...", file=sys.stderr)
        import lm_eval
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
        from lm_eval_export import export_suite

        names = export_suite(
            suite, args.work / "lm_eval_tasks", {t.name: t.limit or None for t in suite.tasks}
        )
        manager = TaskManager(include_path=str(args.work / "lm_eval_tasks"), include_defaults=False)
        lm = HFLM(
            pretrained=model,
            tokenizer=tokenizer,
            batch_size=args.batch_size,
            device="cpu",
            max_length=2048,
        )
        peer = {}
        for config in [None, *configs]:
            master.restore()
            if config is not None:
                quantize_(model, config)
            start = time.perf_counter()
            lm_eval.simple_evaluate(model=lm, tasks=names, task_manager=manager, verbosity="ERROR")
            peer[config.variant_name if config else "baseline"] = round(
                time.perf_counter() - start, 1
            )
        figures["lm_eval"] = {"seconds": round(sum(peer.values()), 1), "per_variant": peer}

    h = figures["harness"]
    ratios = {"harness/floor": round(h["evaluation_seconds"] / figures["floor"]["seconds"], 2),
              "harness_with_analysis/floor": round(h["seconds"] / figures["floor"]["seconds"], 2),
              "peak_rss/fp32_model": round(h["peak_rss_mib"] / fp32_mib, 2)}  # fmt: skip
    if "lm_eval" in figures:
        ratios["lm_eval/harness"] = round(
            figures["lm_eval"]["seconds"] / h["evaluation_seconds"], 2
        )
        if "harness_adaptive" in figures:
            ratios["lm_eval/harness_adaptive"] = round(
                figures["lm_eval"]["seconds"] / figures["harness_adaptive"]["evaluation_seconds"], 2
            )
    if "harness_adaptive" in figures:
        ratios["peak_rss_adaptive/fp32_model"] = round(
            figures["harness_adaptive"]["peak_rss_mib"] / fp32_mib, 2
        )
    figures["fp32_model_mib"] = round(fp32_mib, 1)
    figures["ratios"] = ratios
    figures["machine"] = {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                          "torch": torch.__version__}  # fmt: skip
    args.out.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(figures, indent=2))
    print("\n".join(f"{k:>28}: {v}" for k, v in ratios.items()))


if __name__ == "__main__":
    main()
