"""``results/<run>/``: the run manifest and per-item rows, append-only and resumable.

Layout::

    manifest.json              config, model and suite hashes, versions, timings
    parts/<variant>__<task>.parquet   rows of one finished variant x task
    reference/<task>.safetensors      the baseline's final hidden states at scored tokens
    items.parquet              every part, concatenated (rebuilt after each append)

Every file is written to a temporary name and renamed into place, so a run killed at
any moment leaves only whole files behind; a rerun skips the finished parts. A part or
reference damaged on disk all the same (truncated, overwritten) is found when the run is
reopened, set aside as ``*.damaged`` with a warning, and computed again; a damaged
manifest is one line saying how to recover.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import pandas as pd

from harness import manifest as manifest_file
from harness.errors import InputError
from harness.manifest import Manifest
from harness.records import ItemResult, Reference

ITEM_COLUMNS = [f.name for f in dataclasses.fields(ItemResult)]
LOCK = ".lock"  # held by the process writing the run


def _slug(name: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name)
    return safe if safe == name else f"{safe}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"


def _atomic_write(path: Path, write) -> None:
    """Call ``write(tmp_path)`` then rename the temporary file onto ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except OSError as exc:  # e.g. disk full: name the file the run was writing
        if exc.filename is None:
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path: Path, data: dict) -> None:
    text = json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n"
    _atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _json_default(value):
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} in JSON")


def _readable(path: Path) -> bool:
    """Whether a stored part (parquet) or reference (safetensors) reads back whole."""
    try:
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            pq.read_table(path)
        else:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                for key in f.keys():
                    f.get_slice(key)
                json.loads(f.metadata()["ids"])
        return True
    except Exception:  # any failure to read back is damage
        return False


def rows_to_frame(rows: list[ItemResult]) -> pd.DataFrame:
    records = [dataclasses.asdict(r) | {"slices": list(r.slices)} for r in rows]
    return pd.DataFrame.from_records(records, columns=ITEM_COLUMNS)


class RunStore:
    """One run's folder. Open it with :meth:`open`, which refuses to mix runs."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    @classmethod
    def open(cls, root: Path, fingerprint: dict, overwrite: bool = False) -> RunStore:
        """Create ``root`` or reopen it to resume. A stored run with another fingerprint
        (model, suite, settings or code changed) is an error unless ``overwrite``, which
        deletes it."""
        store = cls(root)
        if store.manifest_path.exists():
            try:
                changed = store.manifest().changed_fingerprint(fingerprint)
            except InputError:
                if not overwrite:
                    raise
                changed = ["damaged"]  # damaged: --overwrite starts afresh
            if changed:
                if not overwrite:
                    raise InputError(
                        f"{root} holds a different run (changed: {', '.join(changed)}); "
                        "pass --overwrite to replace it, or choose another --out"
                    )
                store._acquire_lock()
                store._clear()
        elif root.is_dir() and not overwrite:
            store._refuse_foreign()
        root.mkdir(parents=True, exist_ok=True)
        store._acquire_lock()
        for stale in root.rglob(".*.tmp"):  # left by a run killed while writing
            stale.unlink()
        store._set_aside_damaged()
        if not store.manifest_path.exists():
            manifest_file.create(store.manifest_path, fingerprint, write_json)
        return store

    _held_locks: dict[Path, object] = {}

    @classmethod
    def lock(cls, root: Path, overwrite: bool = False) -> RunStore:
        """Take the run's lock before anything expensive (loading the model): a folder
        another process is writing is refused at once. Creates ``root`` if needed."""
        store = cls(root)
        if not overwrite and store.root.is_dir() and not store.manifest_path.exists():
            store._refuse_foreign()
        store.root.mkdir(parents=True, exist_ok=True)
        store._acquire_lock()
        return store

    def _acquire_lock(self) -> None:
        """Hold an exclusive ``flock`` on ``.lock`` for this process's lifetime, so two
        processes never write one run. The kernel drops it when its holder dies, so a lock
        left by a killed run is stale by construction and simply taken over; the file
        names its holder (pid and command) for the refusal message."""
        key = self.root.resolve()
        if key in self._held_locks:
            return
        lock = open(key / LOCK, "a+")  # noqa: SIM115 (held until the process exits)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "unknown process"
            lock.close()
            raise InputError(f"another qharness process ({holder}) is writing {self.root}; "
                             "wait for it to finish or choose another --out") from None  # fmt: skip
        lock.seek(0)
        lock.truncate()
        lock.write(f"pid {os.getpid()}: {' '.join(sys.argv)[:200]}\n")
        lock.flush()
        self._held_locks[key] = lock

    def _refuse_foreign(self) -> None:
        if any(p.name != LOCK for p in self.root.iterdir()):
            raise InputError(f"{self.root} exists and is not a qharness run; choose another --out")

    def release_if_empty(self) -> None:
        """Give the lock back and remove the folder when it holds nothing else (a run
        refused before it wrote anything leaves no trace)."""
        lock = self._held_locks.pop(self.root.resolve(), None)
        if lock is not None:
            lock.close()
        if self.root.is_dir() and all(p.name == LOCK for p in self.root.iterdir()):
            shutil.rmtree(self.root)

    def _clear(self) -> None:
        """Delete the stored run (``--overwrite``), keeping the lock this process holds."""
        for path in self.root.iterdir():
            if path.name == LOCK:
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()

    def _set_aside_damaged(self) -> None:
        """Rename every unreadable part or reference to ``*.damaged``, so the run computes
        it again; say so on stderr."""
        for path in sorted(self.root.glob("parts/*.parquet")) + sorted(
            self.root.glob("reference/*.safetensors")
        ):
            if _readable(path):
                continue
            path.rename(path.with_name(path.name + ".damaged"))
            print(f"qharness: warning: {path} is damaged; set aside as {path.name}.damaged "
                  "and computed again", file=sys.stderr)  # fmt: skip

    # manifest -------------------------------------------------------------------------
    def manifest(self) -> Manifest:
        return manifest_file.read(self.manifest_path)

    def update_manifest(self, **fields) -> None:
        """Merge ``fields`` into the manifest (see :func:`harness.manifest.update`)."""
        manifest_file.update(self.manifest_path, write_json, **fields)

    # per-item rows --------------------------------------------------------------------
    def _part(self, variant: str, task: str) -> Path:
        return self.root / "parts" / f"{_slug(variant)}__{_slug(task)}.parquet"

    def has(self, variant: str, task: str) -> bool:
        return self._part(variant, task).exists()

    def append(self, variant: str, task: str, rows: list[ItemResult]) -> None:
        """Store the rows of one finished variant x task and refresh ``items.parquet``."""
        frame = rows_to_frame(rows)
        _atomic_write(self._part(variant, task), lambda tmp: frame.to_parquet(tmp, index=False))
        self._consolidate()

    def _consolidate(self) -> None:
        frame = self.load_items()
        _atomic_write(self.root / "items.parquet", lambda tmp: frame.to_parquet(tmp, index=False))

    def load_items(self) -> pd.DataFrame:
        """Every stored row, in the order the parts were finished."""
        parts = sorted(
            (self.root / "parts").glob("*.parquet"), key=lambda p: (p.stat().st_mtime_ns, p.name)
        )
        if not parts:
            return pd.DataFrame(columns=ITEM_COLUMNS)
        frames = []
        for part in parts:
            try:
                frames.append(pd.read_parquet(part))
            except (OSError, ValueError) as exc:  # pyarrow's errors derive from these
                raise InputError(f"{part} is damaged ({type(exc).__name__}); rerun the same "
                                 "`qharness run` command to compute it again") from None  # fmt: skip
        return pd.concat(frames, ignore_index=True)

    # the baseline's references ---------------------------------------------------------
    def _reference(self, task: str) -> Path:
        return self.root / "reference" / f"{_slug(task)}.safetensors"

    def save_reference(self, task: str, references: dict[str, Reference]) -> None:
        from safetensors.torch import save_file

        ids = list(references)
        tensors = {f"{key}.{n}": getattr(references[i], key).contiguous()
                   for n, i in enumerate(ids) for key in ("hidden", "argmax", "tokens")
                   if getattr(references[i], key) is not None}  # fmt: skip
        metadata = {"ids": json.dumps(ids)}
        _atomic_write(
            self._reference(task), lambda tmp: save_file(tensors, str(tmp), metadata=metadata)
        )

    def has_reference(self, task: str) -> bool:
        return self._reference(task).exists()

    def load_reference(self, task: str) -> dict[str, Reference] | None:
        from safetensors import safe_open

        path = self._reference(task)
        if not path.exists():
            return None
        with safe_open(str(path), framework="pt") as f:
            ids, names = json.loads(f.metadata()["ids"]), set(f.keys())
            return {item_id: Reference(**{key: f.get_tensor(f"{key}.{n}") for key in ("hidden", "argmax", "tokens")
                                          if f"{key}.{n}" in names})
                    for n, item_id in enumerate(ids)}  # fmt: skip
