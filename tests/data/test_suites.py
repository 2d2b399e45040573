"""Suite loading and its error messages."""

from __future__ import annotations

import pytest

from harness.data.suites import load_items, load_suite
from harness.errors import InputError
from tests.conftest import REPO, write_jsonl


def test_default_suite_loads():
    suite = load_suite(REPO / "tasks" / "default.yaml")
    kinds = {t.kind for t in suite.tasks}
    assert {"perplexity", "generate"} <= kinds
    assert {"general", "arithmetic"} <= {s for t in suite.tasks for s in t.slices}
    for task in suite.tasks:
        assert load_items(task)


def test_tiny_suite_fields(tiny_suite):
    suite = load_suite(tiny_suite)
    text, mc, gen = suite.tasks
    assert text.window == 64 and mc.metric == "acc" and gen.metric == "exact_match"
    assert gen.fewshot == 2 and gen.fewshot_delimiter == "\n" and gen.stop == ("\n",)
    assert load_items(mc)[1]["slices"] == ["easy"]


def _suite(tmp_path, body: str):
    path = tmp_path / "s.yaml"
    path.write_text(body, encoding="utf-8")
    return path


BAD_SUITES = [
    ("name: x\ntasks: []\n", "'tasks' must be a non-empty list"),
    ("name: x\ntaks: []\n", "unknown key 'taks'; did you mean 'tasks'"),
    ("tasks: [{name: a, kind: perplexity, data: d.jsonl}]\n", "missing required key 'name'"),
    ("name: x\ntasks: [{name: a, kind: perplexity}]\n", "missing required key 'data'"),
    (
        "name: x\ntasks: [{name: a, kind: perplexty, data: d.jsonl}]\n",
        "did you mean 'perplexity'",
    ),
    (
        "name: x\ntasks: [{name: a, kind: perplexity, data: nope.jsonl}]\n",
        "data file not found",
    ),
    (
        "name: x\ntasks: [{name: a, kind: generate, data: d.jsonl, promt: x}]\n",
        "unknown key 'promt'; did you mean 'prompt'",
    ),
    (
        "name: x\ntasks: [{name: a, kind: generate, data: d.jsonl, fewshot: many}]\n",
        "'fewshot' must be an integer of at least 0, not 'many'",
    ),
    (
        "name: x\ntasks: [{name: a, kind: perplexity, data: d.jsonl}, {name: a, kind: perplexity, data: d.jsonl}]\n",
        "duplicate task name",
    ),
    (
        "name: x\ntasks: [{name: a, kind: generate, data: d.jsonl, prompt: '{question}'}]\n",
        "names missing field 'question'",
    ),
    ("name: [unclosed\n", "not valid YAML"),
    (
        "name: x\ntasks: [{name: a, kind: perplexity, data: d.jsonl, metric: acc}]\n",
        "metric 'acc' does not fit kind 'perplexity'",
    ),
]


@pytest.mark.parametrize("body,message", BAD_SUITES)
def test_bad_suites_name_the_file_and_problem(tmp_path, body, message):
    write_jsonl(tmp_path / "d.jsonl", [{"id": "1", "text": "hello", "a": 1, "answer": "2"}])
    path = _suite(tmp_path, body)
    with pytest.raises(InputError, match=message) as info:
        load_suite(path)
    assert str(path) in str(info.value) or f"{tmp_path / 'd.jsonl'}:1:" in str(info.value)


def test_bad_jsonl_line_names_file_and_line(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"id": "1", "text": "ok"}\n{"id": 2, "text": oops}\n')
    with pytest.raises(InputError, match=r"d\.jsonl:2: not valid JSON"):
        load_suite(
            _suite(tmp_path, "name: x\ntasks: [{name: a, kind: perplexity, data: d.jsonl}]\n")
        )


def test_duplicate_ids_and_empty_files(tmp_path):
    write_jsonl(tmp_path / "d.jsonl", [{"id": "1", "text": "a"}, {"id": "1", "text": "b"}])
    with pytest.raises(InputError, match=r"d\.jsonl:2: duplicate item id '1'"):
        load_suite(
            _suite(tmp_path, "name: x\ntasks: [{name: a, kind: perplexity, data: d.jsonl}]\n")
        )
    (tmp_path / "d.jsonl").write_text("\n")
    with pytest.raises(InputError, match="no items"):
        load_suite(
            _suite(tmp_path, "name: x\ntasks: [{name: a, kind: perplexity, data: d.jsonl}]\n")
        )


def test_multiple_choice_answer_must_index_choices(tmp_path):
    write_jsonl(
        tmp_path / "d.jsonl", [{"id": "1", "context": "c", "choices": ["a", "b"], "answer": 2}]
    )
    with pytest.raises(InputError, match=r"d\.jsonl:1: 'answer' must be an index"):
        load_suite(
            _suite(tmp_path, "name: x\ntasks: [{name: a, kind: multiple_choice, data: d.jsonl}]\n")
        )


def test_gate_block_is_validated_with_the_suite(tmp_path):
    write_jsonl(tmp_path / "d.jsonl", [{"id": "1", "text": "hello"}])
    good = _suite(
        tmp_path,
        "name: x\ntasks: [{name: a, kind: perplexity, data: d.jsonl}]\ngate: {rules: [{kind: max_kld, tolerance: 0.2}]}\n",
    )
    assert load_suite(good).gate == {"rules": [{"kind": "max_kld", "tolerance": 0.2}]}
    bad = _suite(
        tmp_path,
        "name: x\ntasks: [{name: a, kind: perplexity, data: d.jsonl}]\ngate: {rules: [{kind: max_kdl, tolerance: 0.2}]}\n",
    )
    with pytest.raises(
        InputError,
        match=r"s\.yaml: gate rule 1: unknown rule kind 'max_kdl'; did you mean 'max_kld'",
    ):
        load_suite(bad)


@pytest.mark.parametrize("body,message", BAD_SUITES)
def test_suites_validate_command_exits_2_with_one_line(tmp_path, capsys, body, message):
    from harness.cli import EXIT_USAGE, main

    write_jsonl(tmp_path / "d.jsonl", [{"id": "1", "text": "hello", "a": 1, "answer": "2"}])
    assert main(["suites", "validate", str(_suite(tmp_path, body))]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert message in err.replace("\\", "") or __import__("re").search(message, err)
    assert err.count("\n") == 1 and "Traceback" not in err


def test_suites_validate_command_accepts_the_default_suite(capsys):
    from harness.cli import EXIT_OK, main

    assert main(["suites", "validate", str(REPO / "tasks" / "default.yaml")]) == EXIT_OK
    assert "ok" in capsys.readouterr().out


def test_an_item_with_an_unpaired_surrogate_escape_is_refused(tmp_path):
    (tmp_path / "t.jsonl").write_text('{"text": "fine \\ud83d\\ude00"}\n{"text": "bad \\ud800"}\n')
    suite = tmp_path / "s.yaml"
    suite.write_text("name: s\ntasks: [{name: a, kind: perplexity, data: t.jsonl}]\n")
    with pytest.raises(InputError, match="t.jsonl:2: not valid Unicode text"):
        load_suite(suite)
