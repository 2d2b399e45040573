"""An InputError is the one kind of error a user sees: one line and exit code 2."""

from __future__ import annotations

from harness.cli import EXIT_USAGE, main
from harness.errors import InputError


def test_an_input_error_is_one_line_and_exit_2(tmp_path, capsys):
    suite = tmp_path / "s.yaml"
    suite.write_text("name: s\ntasks: [{name: a, kind: perplexity, data: missing.jsonl}]\n")
    assert main(["suites", "validate", str(suite)]) == EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert err.startswith("qharness: error: ") and "data file not found" in err
    assert len(err.splitlines()) == 1


def test_input_error_is_an_exception_with_its_message():
    error = InputError("bad thing")
    assert isinstance(error, Exception) and str(error) == "bad thing"
