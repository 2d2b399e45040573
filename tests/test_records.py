"""Records are frozen values; the one derived property says which tasks decode."""

from __future__ import annotations

import dataclasses

import pytest

from harness.records import ModelSpec, Task


def test_only_generate_tasks_scored_by_exact_match_decode():
    task = Task(name="t", kind="generate", data=None, metric="exact_match")
    assert task.decodes
    assert not dataclasses.replace(task, metric="greedy_match").decodes
    assert not dataclasses.replace(task, kind="multiple_choice", metric="acc").decodes


def test_records_are_frozen_with_safe_defaults():
    spec = ModelSpec()
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.source = "other"  # type: ignore[misc]
    assert spec.trust_remote_code is False and spec.dtype == "float32"
