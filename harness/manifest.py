"""``manifest.json`` as one typed, versioned record: the run -> analysis boundary.

The runner writes the manifest field by field as a run goes (:func:`update`, a merge, so
a killed run keeps what it had); everything else reads it through :func:`read`, which
returns a :class:`Manifest` and refuses a record that lacks what analysis needs (a
variant without its ``bits`` is an error, never quietly 16-bit). This is the only module
that touches the JSON.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import InputError
from harness.records import Finding, Task

VERSION = 1  # bump when a field changes meaning; older manifests are read as they were


@dataclass(frozen=True)
class VariantRecord:
    """What made a variant and what it costs: the method, its weight bits (KV bits for a
    KV-cache-only variant), bits per weight counted from the tensors kept, and its size."""

    method: str
    bits: int
    effective_bits: float
    model_bytes: int | None
    simulated: bool = False
    config: dict | None = None
    kv_cache: dict | None = None  # {"bits": ..., ...} when keys and values are quantized
    seconds: float | None = None  # time to quantize or load it
    note: str = ""
    details: dict = field(default_factory=dict)  # everything else the method or artifact reported

    @property
    def kv_bits(self) -> int:
        return int((self.kv_cache or {}).get("bits", 16))

    @classmethod
    def parse(cls, raw: object, name: str, where: str) -> VariantRecord:
        required = ("method", "bits", "effective_bits", "model_bytes")
        if not isinstance(raw, dict) or any(key not in raw for key in required):
            missing = [k for k in required if not isinstance(raw, dict) or k not in raw]
            raise InputError(f"{where}: variant {name!r} lacks {', '.join(missing)}; the run was "
                             "written by another qharness or damaged — rerun it")  # fmt: skip
        known = {f.name for f in dataclasses.fields(cls)} - {"details"}
        values = {k: v for k, v in raw.items() if k in known}
        values["bits"], values["effective_bits"] = int(raw["bits"]), float(raw["effective_bits"])
        return cls(**values, details={k: v for k, v in raw.items() if k not in known})


@dataclass(frozen=True)
class ModelRecord:
    """The base model: where it came from, how it was scored, and its weights' hash."""

    source: str
    dtype: str
    hash: str = ""
    description: str = ""
    revision: str | None = None
    device: str = ""
    trust_remote_code: bool = False
    parameters: int | None = None
    architecture: str = ""

    @classmethod
    def parse(cls, raw: dict) -> ModelRecord:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})

    @property
    def name(self) -> str:
        return self.description or self.source


@dataclass(frozen=True)
class GridCheck:
    """Whether the "float" base model already lies on a low-bit grid (see
    :func:`harness.diagnose.weights.base_precision`)."""

    flagged: bool
    grid_bits: int | None = None
    block: int = 32
    share_at_most_2_to_b: dict = field(default_factory=dict)  # bits -> share of blocks
    mean_distinct_per_block: float | None = None
    aligned_methods: tuple[str, ...] = ()

    @property
    def share(self) -> float:
        """The share of blocks on the ``grid_bits`` grid."""
        return float(self.share_at_most_2_to_b.get(str(self.grid_bits), 0.0))


@dataclass(frozen=True)
class SuiteRecord:
    name: str
    version: str
    path: str
    hash: str
    tasks: tuple[Task, ...]
    gate: dict | None = None  # the suite's raw ``gate:`` block

    @property
    def metrics(self) -> dict[str, str]:
        """Each task's metric, by task name."""
        return {task.name: task.metric for task in self.tasks}

    @classmethod
    def parse(cls, raw: object, where: str) -> SuiteRecord:
        if not isinstance(raw, dict) or not isinstance(raw.get("tasks"), list):
            raise InputError(f"{where}: the suite record lacks its tasks; rerun the run")
        return cls(name=str(raw.get("name", "")), version=str(raw.get("version", "")),
                   path=str(raw.get("path", "")), hash=str(raw.get("hash", "")),
                   tasks=tuple(_task(t, where) for t in raw["tasks"]), gate=raw.get("gate"))  # fmt: skip


def _task(raw: object, where: str) -> Task:
    names = {f.name for f in dataclasses.fields(Task)}
    if not isinstance(raw, dict) or not {"name", "kind", "metric"} <= set(raw):
        raise InputError(f"{where}: a task record lacks its name, kind or metric; rerun the run")
    values = {k: v for k, v in raw.items() if k in names}
    for key in ("data", "fewshot_data"):
        values[key] = Path(values[key]) if values.get(key) else None
    for key in ("slices", "stop"):
        if key in values:
            values[key] = tuple(values[key])
    return Task(**values)


@dataclass(frozen=True)
class Manifest:
    """Everything recorded about a run. Sections a run writes as it goes are empty until
    then; :attr:`suite` is ``None`` only for a run that stopped before evaluating."""

    fingerprint: dict
    version: int = VERSION
    run_name: str = ""
    harness_version: str = ""
    command: tuple[str, ...] = ()
    seed: int | None = None
    model: ModelRecord | None = None
    suite: SuiteRecord | None = None
    settings: dict = field(default_factory=dict)
    libraries: dict = field(default_factory=dict)
    platform: dict = field(default_factory=dict)
    base_precision: GridCheck | None = None
    truncated: dict[str, int] = field(default_factory=dict)
    variants: dict[str, VariantRecord] = field(default_factory=dict)
    skipped_variants: tuple = ()
    calibration: dict | None = None
    timings: dict[str, float] = field(default_factory=dict)
    adaptive: dict[str, dict] = field(default_factory=dict)
    adaptive_failures: dict[str, Finding] = field(default_factory=dict)  # --adaptive stopped these
    peak_rss_mib: float | None = None
    policy: dict | None = None  # the gate policy last applied: {"source": ..., "gate": {...}}
    raw: dict = field(default_factory=dict, repr=False)  # the JSON as stored, for the reports' dump

    def seconds(self, key: str) -> float | None:
        """A recorded timing (``load_model``, ``VARIANT/TASK``, ...)."""
        return self.timings.get(key)

    @property
    def tasks(self) -> tuple[Task, ...]:
        return self.suite.tasks if self.suite else ()

    @property
    def metrics(self) -> dict[str, str]:
        return self.suite.metrics if self.suite else {}

    def changed_fingerprint(self, fingerprint: dict) -> list[str]:
        """What differs between this run's fingerprint and ``fingerprint`` (model, suite,
        settings, code)."""
        keys = set(self.fingerprint) | set(fingerprint)
        return sorted(k for k in keys if self.fingerprint.get(k) != fingerprint.get(k))

    def changed_variant(self, name: str, record: dict) -> list[str]:
        """Which settings of ``record`` (config, calibration, artifact, KV cache) differ
        from those variant ``name`` was stored with (none when it was not stored)."""
        stored = (self.raw.get("variants") or {}).get(name)
        if stored is None:
            return []
        return [key for key, value in record.items() if stored.get(key) != value]

    def variants_in(self, names) -> dict[str, VariantRecord]:
        """The records of the variants among ``names`` (those with rows), in run order."""
        names = set(names)
        return {name: record for name, record in self.variants.items() if name in names}


def read(path: Path) -> Manifest:
    """The manifest at ``path`` (one clear error when it is missing, damaged or newer)."""
    return parse(read_raw(path), str(path))


def parse(raw: dict, path: str = "manifest") -> Manifest:
    """A manifest from its JSON object."""
    version = raw.get("version", 1)
    if not isinstance(version, int) or version > VERSION:
        raise InputError(
            f"{path} was written by a newer qharness (manifest version {version}); upgrade"
        )
    names = {f.name for f in dataclasses.fields(Manifest)}
    values = {k: v for k, v in raw.items() if k in names and k not in ("suite", "variants", "raw")}
    values["fingerprint"] = raw.get("fingerprint") or {}
    values["command"] = tuple(raw.get("command") or ())
    values["skipped_variants"] = tuple(raw.get("skipped_variants") or ())
    for key in ("settings", "libraries", "platform", "truncated", "timings", "adaptive"):
        values[key] = raw.get(key) or {}
    if isinstance(raw.get("model"), dict) and "source" in raw["model"]:
        values["model"] = ModelRecord.parse(raw["model"])
    if isinstance(raw.get("base_precision"), dict):
        grid = raw["base_precision"]
        values["base_precision"] = GridCheck(
            **{**grid, "aligned_methods": tuple(grid.get("aligned_methods", ()))}
        )
    values["adaptive_failures"] = {name: Finding(**{**stop, "ci": tuple(stop["ci"])})
                                   for name, stop in (raw.get("adaptive_failures") or {}).items()}  # fmt: skip
    values["raw"] = raw
    if raw.get("suite") is not None:
        values["suite"] = SuiteRecord.parse(raw["suite"], path)
    stored = raw.get("variants") or {}
    values["variants"] = {
        name: VariantRecord.parse(info, name, path) for name, info in stored.items()
    }
    return Manifest(**values)


def read_raw(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"no qharness run at {path.parent} (manifest.json is missing)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path} is damaged ({exc}); rerun with --overwrite to "
                         "start the run afresh, or move the folder aside") from None  # fmt: skip
    if not isinstance(data, dict):
        raise InputError(f"{path} is damaged (not a JSON object); rerun with "
                         "--overwrite to start the run afresh, or move the folder aside")  # fmt: skip
    return data


def create(path: Path, fingerprint: dict, write_json) -> None:
    write_json(path, {"version": VERSION, "fingerprint": fingerprint})


def update(path: Path, write_json, **fields) -> None:
    """Merge ``fields`` into the manifest (nested dicts are merged one level deep)."""
    data = read_raw(path)
    for key, value in fields.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    data.setdefault("version", VERSION)
    write_json(path, data)
