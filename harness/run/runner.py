"""The sweep: load the base model once, then for each variant restore the float master
weights, quantize in place, evaluate every task, and append the rows to the store."""

from __future__ import annotations

import gc
import platform
import sys
import time
from dataclasses import asdict

import torch
from torch import nn
from tqdm import tqdm

import harness
from harness.data.suites import load_items, load_suite
from harness.diagnose.weights import base_precision
from harness.engine.kinds import kind_of
from harness.engine.kvcache import kv_cache_record
from harness.engine.scorer import MAX_BATCH_TOKENS, MAX_BATCH_TOKENS_ACCELERATOR, Scorer
from harness.engine.tasks import evaluate_task, prepare
from harness.errors import InputError
from harness.metrics import get_metric
from harness.model.load import (
    check_memory,
    describe,
    load_model,
    memory_need,
    prefix_token_id,
    resolve_device,
    weight_files,
    weights_fingerprint,
)
from harness.model.memory import available_bytes, peak_rss_mib, release_freed_memory, reset_peak
from harness.quant import (
    MasterCopy,
    config_to_dict,
    model_bytes_16bit,
    quantize_,
    quantizes_output_head,
)
from harness.quant.artifacts import check_compatible, inspect_artifact, load_artifact
from harness.quant.calibration import calibration_record, item_texts, load_calibration
from harness.records import RunSpec, Variant
from harness.run.adaptive import evaluate_adaptive
from harness.run.fanout import VariantDone, VariantJob, fan_out
from harness.run.fingerprint import code_fingerprint, library_versions, suite_fingerprint
from harness.run.store import RunStore, rows_to_frame

BASELINE = Variant("baseline")


def _log(message: str) -> None:
    tqdm.write(message, file=sys.stderr)


def run(
    spec: RunSpec, *, overwrite: bool = False, progress: bool = True, argv: list[str] | None = None
) -> RunStore:
    """Run (or resume) the sweep described by ``spec``; returns its store (analyse it with
    :func:`harness.analysis.analyse.analyse`). The run folder is locked before the model loads."""
    lock = RunStore.lock(spec.out, overwrite)
    try:
        return _sweep(spec, overwrite=overwrite, progress=progress, argv=argv)
    except BaseException:
        lock.release_if_empty()  # refused before writing anything: leave no folder behind
        raise


def _sweep(spec: RunSpec, *, overwrite: bool, progress: bool, argv: list[str] | None) -> RunStore:
    started = time.perf_counter()
    release_freed_memory()
    reset_peak()
    suite = load_suite(spec.suite_path)
    task_items = {task.name: load_items(task) for task in suite.tasks if kind_of(task).itemized}
    if spec.ray is not None and len(task_items) < len(suite.tasks):
        raise InputError("--ray evaluates the harness's own task kinds; run suites with tasks of "
                         "other kinds (lm-eval's) without --ray")  # fmt: skip
    torch.set_num_threads(spec.threads)
    torch.manual_seed(spec.seed)

    artifacts = {v.name: inspect_artifact(v.artifact) for v in spec.variants if v.artifact}
    if spec.memory_check:
        _check_memory(spec, artifacts)
    load_start = time.perf_counter()
    model, tokenizer = load_model(spec.model)
    load_seconds = time.perf_counter() - load_start
    for info in artifacts.values():  # checked before anything is written or evaluated
        check_compatible(info, model, tokenizer)
    max_length = context_length(model)
    _check_context(suite, max_length)
    model_hash = weights_fingerprint(model)
    fingerprint = {
        "model": model_hash,
        "suite": suite_fingerprint(suite),
        "code": code_fingerprint(),
        "limit": spec.limit,
        "seed": spec.seed,
        "dtype": spec.model.dtype,
        "device": next(model.parameters()).device.type,
    }
    if spec.adaptive:  # partial rows must never be mistaken for complete ones
        fingerprint["adaptive"] = True
    store = RunStore.open(spec.out, fingerprint, overwrite=overwrite)
    # warn when the "float" base model is a dequantized one (stored: the model hash is fixed)
    if store.manifest().base_precision is None:
        store.update_manifest(base_precision=base_precision(model))
    n_params = sum(p.numel() for p in model.parameters())
    store.update_manifest(
        run_name=spec.out.name,
        harness_version=harness.__version__,
        command=argv or [],
        seed=spec.seed,
        model={
            **asdict(spec.model),
            "hash": model_hash,
            "parameters": n_params,
            "architecture": type(model).__name__,
            "description": describe(spec.model),
        },  # fmt: skip
        suite={
            "name": suite.name,
            "version": suite.version,
            "path": str(suite.path),
            "hash": fingerprint["suite"],
            "tasks": [_task_record(t) for t in suite.tasks],
            "gate": suite.gate,
        },  # fmt: skip
        settings={
            "adaptive": spec.adaptive,
            "threads": spec.threads,
            "batch_size": spec.batch_size,
            "limit": spec.limit,
            "kld": "full vocabulary, from the baseline's stored final hidden states",
        },  # fmt: skip
        libraries=library_versions(),
        platform={"machine": platform.machine(), "system": platform.system(), "cpus": _cpu_count()},
    )

    prefix = prefix_token_id(tokenizer)
    prepared = {}
    for task in suite.tasks:
        if not kind_of(task).itemized:
            continue  # the kind loads and renders its own documents
        items = task_items[task.name]
        pool = load_items(_with_data(task, task.fewshot_data)) if task.fewshot_data else items
        chosen = items[: _item_limit(spec, task)]
        prepared[task.name] = prepare(task, chosen, tokenizer, prefix, pool, spec.seed)
    truncated = {name: n for name, n in _truncated(prepared, max_length).items() if n}
    for name, n in truncated.items():
        _log(f"{name}: {n} item(s) longer than the model's context of {max_length} tokens are "
             "left-truncated (their oldest tokens dropped, as lm-eval does)")  # fmt: skip
    store.update_manifest(truncated=truncated)

    scorer = Scorer(model, tokenizer.pad_token_id, batch_size=spec.batch_size,
                    max_length=max_length)  # fmt: skip
    active = scorer  # a checkpoint artifact is scored on its own model, with the base's head
    master = MasterCopy(model, weight_files(spec.model))
    variants = [BASELINE, *spec.variants]
    store.update_manifest(variants={BASELINE.name: _baseline_record(model)},
                          skipped_variants=list(spec.skipped))  # fmt: skip

    def units(task, items=None) -> int:
        if not kind_of(task).itemized:
            return 0
        items = prepared[task.name] if items is None else items
        return sum(len(item.requests) for item in items) + (len(items) if task.decodes else 0)

    pending = {v.name: [t for t in suite.tasks if not _done(store, v, t)] for v in variants}
    total = sum(units(t) for v in variants for t in pending[v.name])
    bar = tqdm(
        total=total, unit="req", disable=not progress or None, dynamic_ncols=True, file=sys.stderr
    )
    stored = store.manifest()
    records = {}
    for variant in spec.variants:  # a changed config, calibration or artifact must not mix
        records[variant.name] = {
            "config": config_to_dict(variant.config) if variant.config else None
        }
        if variant.artifact:
            records[variant.name]["artifact"] = artifacts[variant.name].record()
        if variant.kv_bits:
            records[variant.name]["kv_cache"] = kv_cache_record(variant.kv_bits)
        if variant.config is not None and variant.config.needs_calibration:
            records[variant.name]["calibration"] = calibration_record(spec.calibration)
        if any(store.has(variant.name, t.name) for t in suite.tasks):
            _check_unchanged(stored, records[variant.name], variant.name)
    calibration = None
    if any(pending[v.name] for v in spec.variants if v.config and v.config.needs_calibration):
        items = (item for task_list in task_items.values() for item in task_list)
        calibration = load_calibration(spec.calibration, tokenizer, item_texts(items), prefix)
        store.update_manifest(calibration=calibration.record())
    references = {}
    baseline_rows = policy = None
    seconds: dict[str, float] = {}

    def reference_of(variant: Variant, task):
        if variant.is_baseline:
            return None
        if task.name not in references:  # resuming: the baseline ran in an earlier process
            references[task.name] = store.load_reference(task.name)
        return references[task.name]

    def evaluate(variant: Variant, task, items) -> tuple[list, dict | None]:
        bar.set_description(f"{variant.name} · {task.name}")
        start = time.perf_counter()
        if not kind_of(task).itemized:
            rows, reference = kind_of(task).evaluate(task, active, tokenizer, prefix, variant.name,
                                               reference_of(variant, task), limit=_item_limit(spec, task),
                                               seed=spec.seed, on_progress=bar.update)  # fmt: skip
        else:
            rows, reference = evaluate_task(task, items, active, tokenizer, variant.name,
                                        reference_of(variant, task), on_progress=bar.update)  # fmt: skip
        key = f"{variant.name}/{task.name}"
        seconds[key] = seconds.get(key, 0.0) + time.perf_counter() - start
        return rows, reference

    def finish(variant: Variant, task, rows, reference=None, adaptive: dict | None = None) -> None:
        broken = sum(row.nonfinite > 0 for row in rows)
        if variant.is_baseline and broken:
            raise InputError(f"the baseline gave non-finite logits (NaN/Inf) on {broken} of {len(rows)} "
                             f"items of task {task.name!r}; nothing can be compared to it — score it "
                             "in another --dtype (float32 or bfloat16)")  # fmt: skip
        if variant.is_baseline and reference is not None:
            references[task.name] = reference
            store.save_reference(task.name, reference)
        store.append(variant.name, task.name, rows)
        key = f"{variant.name}/{task.name}"
        store.update_manifest(timings={key: round(seconds.get(key, 0.0), 3)},
                              **({"adaptive": {key: adaptive}} if adaptive else {}))  # fmt: skip
        note = f", {adaptive['evaluated']} of {adaptive['of']} items" if adaptive else ""
        _log(f"{variant.name} · {task.name}: {_headline(task, rows)} "
             f"(n={len(rows)}{note}, {seconds.get(key, 0.0):.1f}s)")  # fmt: skip

    def evaluate_adaptively(variant: Variant, tasks, baseline_rows, policy) -> list:
        """Run ``tasks`` under adaptive stopping; returns those left to run whole."""

        def finish_adaptive(task, rows, record):
            done = {row.item_id for row in rows}
            skipped = [item for item in prepared[task.name] if item.item_id not in done]
            bar.update(units(task, skipped))  # keep the bar honest about what is left
            finish(variant, task, rows, adaptive=record)

        def on_settled(finding):
            store.update_manifest(adaptive_failures={variant.name: asdict(finding)})

        native = [t for t in tasks if kind_of(t).itemized]
        settled = evaluate_adaptive(native, prepared, lambda t, chunk: evaluate(variant, t, chunk)[0],
                                    baseline_rows, policy, finish_adaptive, on_settled)  # fmt: skip
        whole = [t for t in tasks if not kind_of(t).itemized]  # other kinds run a task whole ...
        if settled is None:
            return whole
        for task in whole:  # ... or, once the variant has failed, not at all
            finish(
                variant,
                task,
                [],
                adaptive={"evaluated": 0, "of": None, "stopped_by": settled.message},
            )
        return []

    for variant in variants:
        if not pending[variant.name]:
            continue
        if spec.ray is not None and not variant.is_baseline:
            continue  # fanned out below, once the baseline's references exist
        master.restore()
        if not variant.is_baseline:
            bar.set_description(f"{variant.name} · {'load' if variant.artifact else 'quantize'}")
            active, made = make_variant(model, scorer, variant, artifacts.get(variant.name), calibration,
                                        spec.batch_size, max_length)  # fmt: skip
            store.update_manifest(variants={variant.name: {**records[variant.name], **made}})
        tasks = pending[variant.name]
        if spec.adaptive and not variant.is_baseline:
            if baseline_rows is None:
                items = store.load_items()
                baseline_rows = items[items["variant"] == BASELINE.name]
            policy = policy or _policy(spec, store)
            tasks = evaluate_adaptively(variant, tasks, baseline_rows, policy)
        for task in tasks:
            rows, reference = evaluate(variant, task, prepared.get(task.name))
            finish(variant, task, rows, reference)
        if active is not scorer:  # release the checkpoint before the next variant
            active = scorer
            gc.collect()
    if spec.ray is not None:
        jobs = [VariantJob(spec.model, v, artifacts.get(v.name), tuple(pending[v.name]),
                           {t.name: prepared[t.name] for t in pending[v.name]},
                           {t.name: reference_of(v, t) for t in pending[v.name]},
                           calibration, spec.batch_size, spec.threads, spec.seed)
                for v in spec.variants if pending[v.name]]  # fmt: skip

        def on_done(done: VariantDone) -> None:
            variant = next(v for v in spec.variants if v.name == done.name)
            store.update_manifest(variants={done.name: {**records[done.name], **done.record}})
            for task in pending[done.name]:
                seconds[f"{done.name}/{task.name}"] = done.seconds[task.name]
                finish(variant, task, done.rows[task.name])
                bar.update(units(task))

        gpus = int(next(model.parameters()).device.type == "cuda")
        failures = fan_out(None if spec.ray == "local" else spec.ray, jobs, gpus, on_done)
        if failures:
            raise InputError("; ".join(failures) + " — nothing of it was stored; the other variants "
                             "are: rerun the same command to retry")  # fmt: skip
    bar.close()
    master.restore()

    store.update_manifest(timings={"load_model": round(load_seconds, 3),
                                   "total_last_invocation": round(time.perf_counter() - started, 3)},
                          peak_rss_mib=round(peak_rss_mib(), 1))  # fmt: skip
    return store


def context_length(model: nn.Module) -> int:
    return int(getattr(model.config, "max_position_embeddings", 2048) or 2048)


def make_variant(model: nn.Module, scorer: Scorer, variant: Variant, info, calibration, batch_size: int,
                 max_length: int) -> tuple[Scorer, dict]:  # fmt: skip
    """Make ``variant`` from the base weights just restored: quantize them in place, or
    load its artifact (a checkpoint beside the base, scored with the base's output head
    as reference). Returns the scorer to evaluate it with and its manifest fields."""
    in_place = info.format == "gguf" if info else quantizes_output_head(model, variant.config)
    if in_place:
        scorer.reference_head.keep_copy()  # the baseline's head stays the reference
    if info is not None:
        loaded, report = load_artifact(model, info)
        made = {**asdict(report), "source": str(info.path), "tensor_types": info.tensor_types}
    elif variant.config is not None:
        loaded, made = model, asdict(quantize_(model, variant.config, calibration))
    else:  # the base weights with a quantized KV cache: a curve of its own over KV bits
        loaded, made = (
            model,
            {**_baseline_record(model), "method": "kv-cache", "bits": variant.kv_bits},
        )
    if loaded is model and variant.kv_bits is None:
        return scorer, made
    return Scorer(loaded, scorer.pad_id, batch_size=batch_size, max_length=max_length,
                  reference_head=scorer.reference_head, kv_bits=variant.kv_bits), made  # fmt: skip


def _check_context(suite, max_length: int) -> None:
    """Refuse a window or a generation budget longer than the model's context."""
    for task in suite.tasks:
        if task.kind == "perplexity" and task.window > max_length:
            raise InputError(f"task {task.name!r}: window {task.window} is longer than the model's "
                             f"context of {max_length} tokens; set window to at most {max_length}")  # fmt: skip
        if task.decodes and task.max_new_tokens >= max_length:
            raise InputError(f"task {task.name!r}: max_new_tokens {task.max_new_tokens} does not fit "
                             f"the model's context of {max_length} tokens")  # fmt: skip


def _truncated(prepared: dict, max_length: int) -> dict[str, int]:
    """Per task, the items with a scoring row longer than the model's context (the scorer
    keeps the last ``max_length`` tokens of a row)."""
    return {name: sum(any(len(ctx) + len(cont) - 1 > max_length for ctx, cont in item.requests)
                      for item in items) for name, items in prepared.items()}  # fmt: skip


def _check_memory(spec: RunSpec, artifacts: dict) -> None:
    """Refuse before loading a run whose estimated peak exceeds the free memory."""
    device = resolve_device(spec.model.device)
    batch_tokens = MAX_BATCH_TOKENS.get(device.type, MAX_BATCH_TOKENS_ACCELERATOR)
    beside = max((a.n_bytes for a in artifacts.values() if a.format != "gguf"), default=0)
    check_memory(memory_need(spec.model, batch_tokens, beside), available_bytes(device))


def _policy(spec: RunSpec, store: RunStore):
    """The policy ``--adaptive`` stops on: the one the final gate will apply."""
    from harness.analysis.analyse import resolve_policy

    return resolve_policy(store, spec.policy)


def _check_unchanged(stored, record: dict, name: str) -> None:
    """Refuse to append rows of a variant whose configuration or calibration changed
    since some of its rows were stored under the same name."""
    changed = stored.changed_variant(name, record)
    if changed:
        raise InputError(f"variant {name!r} was stored with another {' and '.join(changed)}; "
                         "write to a new --out, or delete the run folder to start afresh")  # fmt: skip


def _item_limit(spec: RunSpec, task) -> int | None:
    """The number of items to evaluate: the smaller of ``--limit`` and the task's ``limit``."""
    return min([n for n in (spec.limit, task.limit) if n], default=None)


def _done(store: RunStore, variant: Variant, task) -> bool:
    if not store.has(variant.name, task.name):
        return False
    return not variant.is_baseline or store.has_reference(task.name)


def _headline(task, rows) -> str:
    if not rows:
        return "not evaluated"
    return f"{task.metric} {get_metric(task.metric).value(rows_to_frame(rows)):.3f}"


def _baseline_record(model: nn.Module) -> dict:
    return {"config": None, "method": "none", "bits": 16, "effective_bits": 16.0,
            "model_bytes": model_bytes_16bit(model), "simulated": False}  # fmt: skip


def _task_record(task) -> dict:
    record = {k: v for k, v in asdict(task).items() if k not in ("data", "fewshot_data")}
    record["data"] = str(task.data) if task.data else None
    return record


def _with_data(task, path):
    from dataclasses import replace

    return replace(task, data=path, fewshot_data=None)


def _cpu_count() -> int:
    import os

    return os.cpu_count() or 1
