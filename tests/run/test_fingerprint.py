"""The code fingerprint covers every input to the numbers and ignores comments,
formatting and docstrings."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import harness
from harness.run import fingerprint
from harness.run.fingerprint import code_fingerprint

PACKAGE = Path(harness.__file__).parent


@pytest.fixture()
def copy(tmp_path) -> Path:
    target = tmp_path / "harness"
    shutil.copytree(PACKAGE, target, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def test_comments_formatting_and_docstrings_do_not_change_it(copy):
    before = code_fingerprint(copy)
    assert before == code_fingerprint(PACKAGE)
    edit(copy / "engine" / "scorer.py", "class Scorer:", "# a comment\n\n\nclass   Scorer :")
    edit(copy / "records.py", '"""Every record passed', '"""Reworded: every record passed')
    edit(copy / "report" / "markdown.py", "def ", "def _unused():\n    return 1\n\n\ndef ")
    assert code_fingerprint(copy) == before


@pytest.mark.parametrize("module,old,new", [
    ("records.py", "batch_size: int = 8", "batch_size: int = 16"),  # a default
    ("quant/calibration.py", "def ", "X = 1\n\n\ndef "),
    ("run/runner.py", "def ", "X = 1\n\n\ndef "),
    ("metrics.py", 'Metric("f1", True', 'Metric("f1", False'),
])  # fmt: skip
def test_any_code_that_decides_the_numbers_changes_it(copy, module, old, new):
    before = code_fingerprint(copy)
    edit(copy / module, old, new)
    assert code_fingerprint(copy) != before


def test_library_versions_change_it(copy, monkeypatch):
    before = code_fingerprint(copy)
    versions = fingerprint.library_versions()
    monkeypatch.setattr(
        fingerprint, "library_versions", lambda: {**versions, "transformers": "0.0"}
    )
    assert code_fingerprint(copy) != before
    assert {"torch", "transformers", "lm-eval", "gguf", "numpy"} <= set(versions)
