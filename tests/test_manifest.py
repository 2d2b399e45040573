"""The manifest record: typed, versioned, strict where analysis depends on it."""

from __future__ import annotations

import json

import pytest

from harness.errors import InputError
from harness.manifest import VERSION, parse, read, update
from harness.store import write_json

VARIANTS = {"baseline": {"method": "none", "bits": 16, "effective_bits": 16.0, "model_bytes": 800},
            "rtn-w4": {"method": "rtn", "bits": 4, "effective_bits": 4.5, "model_bytes": 200,
                       "config": {"method": "rtn", "bits": 4}, "kv_cache": {"bits": 8}, "packed_bytes": 7}}  # fmt: skip
SUITE = {"name": "s", "version": "2", "path": "s.yaml", "hash": "h",
         "tasks": [{"name": "t", "kind": "multiple_choice", "metric": "acc", "slices": ["rare"], "data": "/x.jsonl"}]}  # fmt: skip


def test_sections_become_typed_records():
    manifest = parse({"version": 1, "fingerprint": {"model": "m"}, "variants": VARIANTS, "suite": SUITE,
                      "model": {"source": "default", "dtype": "float32", "description": "tiny"},
                      "policy": {"source": "built-in", "gate": {}}})  # fmt: skip
    rtn = manifest.variants["rtn-w4"]
    assert (rtn.method, rtn.bits, rtn.effective_bits, rtn.kv_bits) == ("rtn", 4, 4.5, 8)
    assert rtn.details == {"packed_bytes": 7} and manifest.variants["baseline"].kv_bits == 16
    assert manifest.metrics == {"t": "acc"} and manifest.tasks[0].slices == ("rare",)
    assert str(manifest.tasks[0].data) == "/x.jsonl" and manifest.model.name == "tiny"
    assert manifest.policy["source"] == "built-in" and manifest.version == VERSION


def test_a_variant_without_its_bits_is_an_error_not_16_bits():
    broken = {"rtn-w4": {k: v for k, v in VARIANTS["rtn-w4"].items() if k != "bits"}}
    with pytest.raises(InputError, match="variant 'rtn-w4' lacks bits"):
        parse({"fingerprint": {}, "variants": broken})


def test_a_newer_manifest_is_refused(tmp_path):
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({"version": VERSION + 1, "fingerprint": {}}))
    with pytest.raises(InputError, match="newer qharness"):
        read(path)


def test_updates_merge_one_level_deep_and_stamp_the_version(tmp_path):
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({"fingerprint": {"model": "a"}}))
    update(path, write_json, timings={"a": 1.0})
    update(path, write_json, timings={"b": 2.0}, seed=3)
    manifest = read(path)
    assert (
        manifest.timings == {"a": 1.0, "b": 2.0}
        and manifest.seed == 3
        and manifest.version == VERSION
    )


def test_what_changed_since_a_run_was_stored():
    manifest = parse({"fingerprint": {"model": "a", "code": "c"}, "variants": VARIANTS})
    assert manifest.changed_fingerprint({"model": "a", "code": "c"}) == []
    assert manifest.changed_fingerprint({"model": "b", "code": "c", "seed": 1}) == ["model", "seed"]
    assert manifest.changed_variant("rtn-w4", {"config": {"method": "rtn", "bits": 4}}) == []
    assert manifest.changed_variant("rtn-w4", {"config": {"method": "rtn", "bits": 3}}) == [
        "config"
    ]
    assert manifest.changed_variant("never-stored", {"config": None}) == []
