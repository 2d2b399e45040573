"""Task kinds plug in: the harness finds every kind its engine modules register, a suite
entry of a plug-in kind maps its own keys, and an unknown kind is a clear error."""

from __future__ import annotations

import pytest

from harness.data.suites import load_suite
from harness.engine.kinds import KINDS, TaskKind, get_kind, kind_names
from harness.errors import InputError


def test_the_native_kinds_and_the_lm_eval_kind_are_found():
    assert {"perplexity", "multiple_choice", "generate", "lm_eval"} <= set(kind_names())
    assert get_kind("perplexity").itemized and not get_kind("lm_eval").itemized
    assert get_kind("multiple_choice").metrics == ("acc", "acc_norm")


def test_a_plug_in_kind_maps_its_own_keys_and_metric(tmp_path, monkeypatch):
    calls = []

    def resolve(ref: str, folder, where):
        calls.append((ref, folder))
        return f"{folder}/{ref}", "exact_match"

    kind = TaskKind("echo", default_metric="acc", source_key="echo", keys={"echo": "source", "pick": "answer_filter"},
                    resolve=resolve, evaluate=lambda *a, **k: ([], {}))  # fmt: skip
    monkeypatch.setitem(KINDS._entries, "echo", kind)
    suite = tmp_path / "s.yaml"
    suite.write_text(
        "name: s\ntasks: [{name: a, kind: echo, echo: things, pick: last, slices: [rare]}]\n"
    )
    task = load_suite(suite).tasks[0]
    assert (task.source, task.answer_filter, task.metric, task.data) == (
        f"{tmp_path}/things",
        "last",
        "exact_match",
        None,
    )
    assert calls == [("things", tmp_path)]
    suite.write_text("name: s\ntasks: [{name: a, kind: perplexity, data: x.jsonl, echo: y}]\n")
    with pytest.raises(InputError, match="unknown key 'echo'"):  # a kind's keys are its own
        load_suite(suite)
    suite.write_text("name: s\ntasks: [{name: a, kind: echo}]\n")
    with pytest.raises(InputError, match="missing required key 'echo'"):
        load_suite(suite)


def test_an_unknown_kind_names_the_known_ones(tmp_path):
    suite = tmp_path / "s.yaml"
    suite.write_text("name: s\ntasks: [{name: a, kind: multiple_choise, data: x.jsonl}]\n")
    with pytest.raises(
        InputError, match="unknown kind 'multiple_choise'; did you mean 'multiple_choice'.*lm_eval"
    ):
        load_suite(suite)
