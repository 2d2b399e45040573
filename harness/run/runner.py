"""The sweep: load the base model once, record the run, prepare every task's items, plan
the work still to do (:mod:`harness.run.plan`), then for each variant restore the float
master weights, make the variant and evaluate its tasks (:mod:`harness.run.session`)."""

from __future__ import annotations

import os
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
from harness.engine.scorer import MAX_BATCH_TOKENS, MAX_BATCH_TOKENS_ACCELERATOR
from harness.engine.tasks import prepare_suite
from harness.errors import InputError
from harness.model.load import (
    check_memory,
    describe,
    load_model,
    memory_need,
    prefix_token_id,
    resolve_device,
    weights_fingerprint,
)
from harness.model.memory import available_bytes, peak_rss_mib, release_freed_memory, reset_peak
from harness.quant.artifacts import check_compatible, inspect_artifact
from harness.records import RunSpec
from harness.run.fingerprint import code_fingerprint, library_versions, suite_fingerprint
from harness.run.plan import plan, tasks_of
from harness.run.session import BASELINE, Session, baseline_record, log
from harness.store import RunStore


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
    items = {task.name: load_items(task) for task in suite.tasks if kind_of(task).itemized}
    if spec.ray is not None and len(items) < len(suite.tasks):
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
    store = _open_store(spec, suite, model, overwrite, argv)
    prefix = prefix_token_id(tokenizer)
    prepared = _prepare(spec, suite, items, tokenizer, prefix, max_length, store)
    variants = [BASELINE, *spec.variants]
    work = plan(variants, suite, store, prepared)
    bar = tqdm(total=sum(unit.requests for unit in work), unit="req", disable=not progress or None,
               dynamic_ncols=True, file=sys.stderr)  # fmt: skip
    session = Session(
        spec, suite, model, tokenizer, prefix, store, prepared, artifacts, max_length, bar
    )
    session.start(work, items)
    for variant in variants:  # with --ray the baseline runs here, the others fan out below
        pending = tasks_of(work, variant.name)
        if pending and (spec.ray is None or variant.is_baseline):
            session.run_variant(variant, pending)
    if spec.ray is not None:
        session.fan_out(work)
    bar.close()
    session.master.restore()
    store.update_manifest(timings={"load_model": round(load_seconds, 3),
                                   "total_last_invocation": round(time.perf_counter() - started, 3)},
                          peak_rss_mib=round(peak_rss_mib(), 1))  # fmt: skip
    return store


def _open_store(
    spec: RunSpec, suite, model: nn.Module, overwrite: bool, argv: list[str] | None
) -> RunStore:
    """Open (or resume) the run folder under the run's fingerprint and record the run:
    model, suite, settings, libraries, platform and the baseline."""
    model_hash = weights_fingerprint(model)
    fingerprint = {"model": model_hash, "suite": suite_fingerprint(suite), "code": code_fingerprint(),
                   "limit": spec.limit, "seed": spec.seed, "dtype": spec.model.dtype,
                   "device": next(model.parameters()).device.type}  # fmt: skip
    if spec.adaptive:  # partial rows must never be mistaken for complete ones
        fingerprint["adaptive"] = True
    store = RunStore.open(spec.out, fingerprint, overwrite=overwrite)
    # warn when the "float" base model is a dequantized one (stored: the model hash is fixed)
    if store.manifest().base_precision is None:
        store.update_manifest(base_precision=base_precision(model))
    store.update_manifest(
        run_name=spec.out.name, harness_version=harness.__version__, command=argv or [], seed=spec.seed,
        model={**asdict(spec.model), "hash": model_hash, "parameters": sum(p.numel() for p in model.parameters()),
               "architecture": type(model).__name__, "description": describe(spec.model)},
        suite={"name": suite.name, "version": suite.version, "path": str(suite.path), "hash": fingerprint["suite"],
               "tasks": [_task_record(t) for t in suite.tasks], "gate": suite.gate},
        settings={"adaptive": spec.adaptive, "threads": spec.threads, "batch_size": spec.batch_size,
                  "limit": spec.limit, "kld": "full vocabulary, from the baseline's stored final hidden states"},
        libraries=library_versions(),
        platform={"machine": platform.machine(), "system": platform.system(), "cpus": os.cpu_count() or 1},
        variants={BASELINE.name: baseline_record(model)}, skipped_variants=list(spec.skipped),
    )  # fmt: skip
    return store


def _prepare(spec: RunSpec, suite, items: dict, tokenizer, prefix: int, max_length: int,
             store: RunStore) -> dict:  # fmt: skip
    """Every itemized task's items prepared (:func:`~harness.engine.tasks.prepare_suite`);
    items longer than the context are counted in the manifest."""
    prepared = prepare_suite(suite, tokenizer, prefix, spec.seed, spec.limit, items)
    truncated = {name: n for name, n in _truncated(prepared, max_length).items() if n}
    for name, n in truncated.items():
        log(f"{name}: {n} item(s) longer than the model's context of {max_length} tokens are "
            "left-truncated (their oldest tokens dropped, as lm-eval does)")  # fmt: skip
    store.update_manifest(truncated=truncated)
    return prepared


def context_length(model: nn.Module) -> int:
    return int(getattr(model.config, "max_position_embeddings", 2048) or 2048)


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


def _task_record(task) -> dict:
    record = {k: v for k, v in asdict(task).items() if k not in ("data", "fewshot_data")}
    record["data"] = str(task.data) if task.data else None
    return record
