"""``qharness run --ray [ADDRESS]``: every variant (quantize or load, then evaluate) as one
Ray task.

The driver evaluates the baseline itself (every variant needs its references), then
submits one task per pending variant with the resources it declares (``--threads``
CPUs, one GPU when ``--device`` is CUDA). A worker loads the base model from its source
(so the model — and any artifact — must be readable there); the prepared items and the
baseline's references reach it through Ray's object store, and its rows come back the
same way. Only the driver writes the run folder, so resuming (with or without ``--ray``),
fingerprints and the lock work as in a sequential run, and the stored rows are the same.
A worker that dies is retried once; a variant that fails again is reported and stored
nowhere.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

from harness.errors import InputError
from harness.records import ItemResult, ModelSpec, Task, Variant

RETRIES = 1  # a dead worker's variant runs once more


@dataclass(frozen=True)
class VariantJob:
    """Everything a worker needs to make and evaluate one variant (picklable)."""

    model: ModelSpec
    variant: Variant
    artifact: object | None  # ArtifactInfo
    tasks: tuple[Task, ...]
    prepared: dict  # task name -> list[PreparedItem]
    references: dict  # task name -> {item id: Reference}
    calibration: object | None  # Calibration
    batch_size: int
    threads: int
    seed: int


@dataclass
class VariantDone:
    """A worker's result: the variant's manifest record and its rows per task."""

    name: str
    record: dict
    rows: dict[str, list[ItemResult]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def require_ray():
    try:
        import ray
    except ImportError:
        raise InputError("--ray needs Ray: pip install 'qharness[ray]'") from None
    return ray


def run_job(job: VariantJob) -> VariantDone:
    """Make ``job.variant`` from a freshly loaded base model and evaluate its tasks (runs
    in a Ray worker; the same steps as the sequential sweep)."""
    import time

    import torch

    from harness.engine.scorer import Scorer
    from harness.engine.tasks import evaluate_task
    from harness.model.load import load_model
    from harness.run.runner import context_length
    from harness.run.session import make_variant

    torch.set_num_threads(job.threads)
    torch.manual_seed(job.seed)
    model, tokenizer = load_model(job.model)
    max_length = context_length(model)
    scorer = Scorer(model, tokenizer.pad_token_id, batch_size=job.batch_size, max_length=max_length)
    active, record = make_variant(model, scorer, job.variant, job.artifact, job.calibration, job.batch_size,
                                  max_length)  # fmt: skip
    done = VariantDone(job.variant.name, record)
    for task in job.tasks:
        start = time.perf_counter()
        done.rows[task.name], _ = evaluate_task(task, job.prepared[task.name], active, tokenizer, job.variant.name,
                                                job.references[task.name])  # fmt: skip
        done.seconds[task.name] = time.perf_counter() - start
    return done


def fan_out(address: str | None, jobs: list[VariantJob], gpus: int,
            on_done: Callable[[VariantDone], None]) -> list[str]:  # fmt: skip
    """Run ``jobs`` on Ray (a local one when ``address`` is None), calling ``on_done`` in
    the driver as each finishes; returns one line per variant that failed."""
    ray = require_ray()
    if not ray.is_initialized():
        options = {"address": address} if address else {"num_cpus": max(os.cpu_count() or 1, 1)}
        ray.init(**options, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
                 runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(_import_paths())}})  # fmt: skip
    remote = ray.remote(run_job)
    pending = {remote.options(num_cpus=job.threads, num_gpus=gpus, max_retries=RETRIES).remote(job): job
               for job in jobs}  # fmt: skip
    failures = []
    while pending:
        [ready], _ = ray.wait(list(pending), num_returns=1)
        job = pending.pop(ready)
        try:
            on_done(ray.get(ready))
        except (ray.exceptions.RayError, InputError) as exc:
            failures.append(
                f"variant {job.variant.name!r}: {str(exc).strip().splitlines()[-1][:200]}"
            )
    return failures


def _import_paths() -> list[str]:
    """Where this process finds the harness (and any module a config class lives in),
    for the workers: the current folder and the driver's ``sys.path`` entries on disk."""
    import sys

    return [os.getcwd(), *(p for p in sys.path if p and os.path.isdir(p))]
