"""One sweep's live state and its steps: make a variant from the restored base weights,
evaluate a task on it, store the rows (and the baseline's references), under full or
adaptive scheduling, in this process or fanned out on Ray."""

from __future__ import annotations

import gc
import sys
import time
from dataclasses import asdict

from torch import nn
from tqdm import tqdm

from harness.engine.kinds import kind_of
from harness.engine.kvcache import kv_cache_record
from harness.engine.scorer import Scorer
from harness.engine.tasks import evaluate_task, item_limit
from harness.errors import InputError
from harness.metrics import get_metric
from harness.model.load import weight_files
from harness.quant import (
    config_to_dict,
    model_bytes_16bit,
    quantize_,
    quantizes_output_head,
)
from harness.quant.artifacts import load_artifact
from harness.quant.calibration import calibration_record, item_texts, load_calibration
from harness.quant.master import MasterCopy
from harness.records import RunSpec, Suite, Task, Variant
from harness.run.adaptive import evaluate_adaptive
from harness.run.plan import WorkUnit, request_count, tasks_of
from harness.store import RunStore, rows_to_frame

BASELINE = Variant("baseline")


def log(message: str) -> None:
    tqdm.write(message, file=sys.stderr)


class Session:
    """The loaded base model, its scorer, the store, every task's prepared items and the
    baseline's references, shared by the steps of one sweep."""

    def __init__(self, spec: RunSpec, suite: Suite, model: nn.Module, tokenizer, prefix: int, store: RunStore,
                 prepared: dict, artifacts: dict, max_length: int, bar: tqdm) -> None:  # fmt: skip
        self.spec, self.model, self.tokenizer, self.prefix, self.store = (
            spec,
            model,
            tokenizer,
            prefix,
            store,
        )
        self.tasks = {task.name: task for task in suite.tasks}
        self.prepared, self.artifacts, self.max_length, self.bar = (
            prepared,
            artifacts,
            max_length,
            bar,
        )
        self.scorer = Scorer(
            model, tokenizer.pad_token_id, batch_size=spec.batch_size, max_length=max_length
        )
        self.active = (
            self.scorer
        )  # a checkpoint artifact is scored on its own model, with the base's head
        self.master = MasterCopy(model, weight_files(spec.model))
        self.references: dict[str, dict] = {}
        self.seconds: dict[str, float] = {}
        self.records: dict[
            str, dict
        ] = {}  # what made each variant: config, artifact, KV cache, calibration
        self.calibration = None
        self.baseline_rows = self.policy = None

    def start(self, work: list[WorkUnit], items: dict[str, list[dict]]) -> None:
        """Record what makes each variant (refusing one stored under the same name with
        other settings), and read the calibration text if a pending variant needs it."""
        stored = self.store.manifest()
        for variant in self.spec.variants:
            record = {"config": config_to_dict(variant.config) if variant.config else None}
            if variant.artifact:
                record["artifact"] = self.artifacts[variant.name].record()
            if variant.kv_bits:
                record["kv_cache"] = kv_cache_record(variant.kv_bits)
            if variant.config is not None and variant.config.needs_calibration:
                record["calibration"] = calibration_record(self.spec.calibration)
            changed = stored.changed_variant(variant.name, record)
            if changed and any(self.store.has(variant.name, task) for task in self.tasks):
                raise InputError(f"variant {variant.name!r} was stored with another {' and '.join(changed)}; "
                                 "write to a new --out, or delete the run folder to start afresh")  # fmt: skip
            self.records[variant.name] = record
        calibrated = {v.name for v in self.spec.variants if v.config and v.config.needs_calibration}
        if any(unit.variant in calibrated for unit in work):
            texts = item_texts(item for task_items in items.values() for item in task_items)
            self.calibration = load_calibration(
                self.spec.calibration, self.tokenizer, texts, self.prefix
            )
            self.store.update_manifest(calibration=self.calibration.record())

    def run_variant(self, variant: Variant, task_names: list[str]) -> None:
        """Make ``variant`` and evaluate its pending tasks (adaptively with ``--adaptive``)."""
        self.master.restore()
        if not variant.is_baseline:
            self.bar.set_description(
                f"{variant.name} · {'load' if variant.artifact else 'quantize'}"
            )
            self.active, made = make_variant(self.model, self.scorer, variant, self.artifacts.get(variant.name),
                                             self.calibration, self.spec.batch_size, self.max_length)  # fmt: skip
            self.store.update_manifest(
                variants={variant.name: {**self.records[variant.name], **made}}
            )
        tasks = [self.tasks[name] for name in task_names]
        if self.spec.adaptive and not variant.is_baseline:
            tasks = self._adaptively(variant, tasks)
        for task in tasks:
            rows, reference = self.evaluate(variant, task, self.prepared.get(task.name))
            self.finish(variant, task, rows, reference)
        if self.active is not self.scorer:  # release the checkpoint before the next variant
            self.active = self.scorer
            gc.collect()

    def reference_of(self, variant: Variant, task: Task):
        if variant.is_baseline:
            return None
        if task.name not in self.references:  # resuming: the baseline ran in an earlier process
            self.references[task.name] = self.store.load_reference(task.name)
        return self.references[task.name]

    def evaluate(self, variant: Variant, task: Task, items) -> tuple[list, dict | None]:
        self.bar.set_description(f"{variant.name} · {task.name}")
        start = time.perf_counter()
        kind, reference = kind_of(task), self.reference_of(variant, task)
        if kind.itemized:
            rows, made = evaluate_task(task, items, self.active, self.tokenizer, variant.name, reference,
                                       on_progress=self.bar.update)  # fmt: skip
        else:
            rows, made = kind.evaluate(task, self.active, self.tokenizer, self.prefix, variant.name, reference,
                                       limit=item_limit(self.spec.limit, task), seed=self.spec.seed,
                                       on_progress=self.bar.update)  # fmt: skip
        key = f"{variant.name}/{task.name}"
        self.seconds[key] = self.seconds.get(key, 0.0) + time.perf_counter() - start
        return rows, made

    def finish(
        self, variant: Variant, task: Task, rows, reference=None, adaptive: dict | None = None
    ) -> None:
        """Store a task's rows (the baseline's with its references) and log its headline."""
        broken = sum(row.nonfinite > 0 for row in rows)
        if variant.is_baseline and broken:
            raise InputError(f"the baseline gave non-finite logits (NaN/Inf) on {broken} of {len(rows)} "
                             f"items of task {task.name!r}; nothing can be compared to it — score it "
                             "in another --dtype (float32 or bfloat16)")  # fmt: skip
        if variant.is_baseline and reference is not None:
            self.references[task.name] = reference
            self.store.save_reference(task.name, reference)
        self.store.append(variant.name, task.name, rows)
        key = f"{variant.name}/{task.name}"
        self.store.update_manifest(timings={key: round(self.seconds.get(key, 0.0), 3)},
                                   **({"adaptive": {key: adaptive}} if adaptive else {}))  # fmt: skip
        note = f", {adaptive['evaluated']} of {adaptive['of']} items" if adaptive else ""
        log(f"{variant.name} · {task.name}: {headline(task, rows)} "
            f"(n={len(rows)}{note}, {self.seconds.get(key, 0.0):.1f}s)")  # fmt: skip

    def _adaptively(self, variant: Variant, tasks: list[Task]) -> list[Task]:
        """Run itemized ``tasks`` under adaptive stopping; returns the tasks left to run whole."""
        if self.baseline_rows is None:
            items = self.store.load_items()
            self.baseline_rows = items[items["variant"] == BASELINE.name]
        if self.policy is None:
            from harness.analysis.analyse import resolve_policy  # the policy the final gate applies

            self.policy = resolve_policy(self.store, self.spec.policy)

        def finish_adaptive(task, rows, record):
            done = {row.item_id for row in rows}
            skipped = [item for item in self.prepared[task.name] if item.item_id not in done]
            self.bar.update(request_count(task, skipped))  # keep the bar honest about what is left
            self.finish(variant, task, rows, adaptive=record)

        def on_settled(finding):
            self.store.update_manifest(adaptive_failures={variant.name: asdict(finding)})

        itemized = [t for t in tasks if kind_of(t).itemized]
        settled = evaluate_adaptive(itemized, self.prepared, lambda t, chunk: self.evaluate(variant, t, chunk)[0],
                                    self.baseline_rows, self.policy, finish_adaptive, on_settled)  # fmt: skip
        whole = [t for t in tasks if not kind_of(t).itemized]  # other kinds run a task whole ...
        if settled is None:
            return whole
        for task in whole:  # ... or, once the variant has failed, not at all
            self.finish(
                variant,
                task,
                [],
                adaptive={"evaluated": 0, "of": None, "stopped_by": settled.message},
            )
        return []

    def fan_out(self, work: list[WorkUnit]) -> None:
        """Every pending variant but the baseline as one Ray task; rows stored as each returns."""
        from harness.run.fanout import VariantDone, VariantJob, fan_out

        spec = self.spec
        pending = {v.name: [self.tasks[n] for n in tasks_of(work, v.name)] for v in spec.variants}
        jobs = [VariantJob(spec.model, v, self.artifacts.get(v.name), tuple(pending[v.name]),
                           {t.name: self.prepared[t.name] for t in pending[v.name]},
                           {t.name: self.reference_of(v, t) for t in pending[v.name]},
                           self.calibration, spec.batch_size, spec.threads, spec.seed)
                for v in spec.variants if pending[v.name]]  # fmt: skip

        def on_done(done: VariantDone) -> None:
            variant = next(v for v in spec.variants if v.name == done.name)
            self.store.update_manifest(
                variants={done.name: {**self.records[done.name], **done.record}}
            )
            for task in pending[done.name]:
                self.seconds[f"{done.name}/{task.name}"] = done.seconds[task.name]
                self.finish(variant, task, done.rows[task.name])
                self.bar.update(request_count(task, self.prepared.get(task.name)))

        gpus = int(next(self.model.parameters()).device.type == "cuda")
        failures = fan_out(None if spec.ray == "local" else spec.ray, jobs, gpus, on_done)
        if failures:
            raise InputError("; ".join(failures) + " — nothing of it was stored; the other variants "
                             "are: rerun the same command to retry")  # fmt: skip


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
            {**baseline_record(model), "method": "kv-cache", "bits": variant.kv_bits},
        )
    if loaded is model and variant.kv_bits is None:
        return scorer, made
    return Scorer(loaded, scorer.pad_id, batch_size=batch_size, max_length=max_length,
                  reference_head=scorer.reference_head, kv_bits=variant.kv_bits), made  # fmt: skip


def baseline_record(model: nn.Module) -> dict:
    return {"config": None, "method": "none", "bits": 16, "effective_bits": 16.0,
            "model_bytes": model_bytes_16bit(model), "simulated": False}  # fmt: skip


def headline(task: Task, rows) -> str:
    if not rows:
        return "not evaluated"
    return f"{task.metric} {get_metric(task.metric).value(rows_to_frame(rows)):.3f}"
