"""The shipped data generators are deterministic and match the committed files."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO


def test_arithmetic_generator_is_deterministic_and_matches_the_committed_files(tmp_path):
    for run in ("a", "b"):
        subprocess.run([sys.executable, str(REPO / "tasks" / "make_arithmetic.py"), "--out", str(tmp_path / run)],
                       check=True, capture_output=True)  # fmt: skip
    for name in (
        "add_1digit.jsonl",
        "sub_1digit.jsonl",
        "add_2digit_mc.jsonl",
        "compare_mc.jsonl",
        "count.jsonl",
    ):
        committed = (REPO / "tasks" / "data" / name).read_bytes()
        assert (
            (tmp_path / "a" / name).read_bytes()
            == (tmp_path / "b" / name).read_bytes()
            == committed
        )


@pytest.mark.parametrize(
    "script,files",
    [("make_rare.py", ["rare_copy.jsonl"]), ("make_facts.py", ["facts_cloze.jsonl"])],
)
def test_rare_and_facts_generators_are_deterministic(tmp_path, script, files):
    for run in ("a", "b"):
        subprocess.run([sys.executable, str(REPO / "tasks" / script), "--out", str(tmp_path / run / files[0])],
                       check=True, capture_output=True, env={**os.environ, "PYTHONHASHSEED": "1" if run == "a" else "2"})  # fmt: skip
    committed = (REPO / "tasks" / "data" / files[0]).read_bytes()
    assert (
        (tmp_path / "a" / files[0]).read_bytes()
        == (tmp_path / "b" / files[0]).read_bytes()
        == committed
    )


def test_arithmetic_items_are_labelled_by_carry():
    sys.path.insert(0, str(REPO / "tasks"))
    try:
        from make_arithmetic import build
    finally:
        sys.path.pop(0)
    items = build(seed=0)
    assert len(items) == 100 and len({it["id"] for it in items}) == 100
    for it in items:
        assert int(it["answer"]) == it["a"] + it["b"]
        assert it["slices"] == (["carry"] if it["a"] + it["b"] >= 10 else ["no_carry"])
    assert build(seed=1) != items


def test_text_cleaner_keeps_prose_and_drops_markup():
    sys.path.insert(0, str(REPO / "tasks"))
    try:
        from make_general_text import prose_paragraphs
    finally:
        sys.path.pop(0)
    rst = (
        "Heading\n=======\n\n"
        "The :func:`len` function returns the number of items in a container, and works with\n"
        "``lists``, *tuples* and `strings <https://example.org>`_ alike in every program ::\n\n"
        "    >>> len([1, 2])\n    2\n\n"
        ".. note::\n\n   A directive body that should be dropped from the prose entirely here.\n\n"
        "Short line.\n"
    )
    paragraphs = prose_paragraphs(rst)
    assert paragraphs == [
        "The len function returns the number of items in a container, and works with "
        "lists, tuples and strings alike in every program"
    ]


def test_long_context_generator_is_deterministic_and_matches_the_committed_files(tmp_path):
    for run in ("a", "b"):
        subprocess.run([sys.executable, str(REPO / "tasks" / "make_long_context.py"), "--out", str(tmp_path / run)],
                       check=True, capture_output=True)  # fmt: skip
    for name in ("passkey.jsonl", "kv_lookup.jsonl"):
        committed = (REPO / "tasks" / "data" / name).read_bytes()
        assert (
            (tmp_path / "a" / name).read_bytes()
            == (tmp_path / "b" / name).read_bytes()
            == committed
        )


def test_long_context_needles_sit_at_their_depth():
    import json

    items = [
        json.loads(line)
        for line in (REPO / "tasks" / "data" / "passkey.jsonl").read_text().splitlines()
    ]
    assert len(items) == 25  # five lengths x five depths
    for item in items:
        depth = int(next(s for s in item["slices"] if s.startswith("depth:")).split(":")[1])
        position = item["context"].index(f"The pass key is {item['answer']}") / len(item["context"])
        assert abs(position - depth / 100) < 0.1


def test_counting_items_continue_their_sequence():
    sys.path.insert(0, str(REPO / "tasks"))
    try:
        from make_arithmetic import counting
    finally:
        sys.path.pop(0)
    for item in counting(seed=0):
        numbers = [int(x) for x in item["sequence"].rstrip(",").split(", ")]
        step = numbers[1] - numbers[0]
        assert all(b - a == step for a, b in zip(numbers, numbers[1:], strict=False))
        assert int(item["answer"]) == numbers[-1] + step and item["slices"] == [f"step:{step}"]
