"""Calibration windows: seeded, shaped, prefixed, and never drawn from evaluation items."""

from __future__ import annotations

import json

import pytest
import torch

from harness.data.suites import load_items, load_suite
from harness.errors import InputError
from harness.quant.calibration import DEFAULT_SOURCE, item_texts, load_calibration
from harness.records import CalibrationSpec
from tests.conftest import REPO

PROSE = " ".join(f"word{i} of calibration prose number {i % 7}." for i in range(300))


def source(tmp_path, *texts):
    path = tmp_path / "calib.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    return path


def test_windows_are_seeded_and_shaped(tmp_path, tokenizer):
    path = source(tmp_path, PROSE, PROSE[::-1])
    spec = CalibrationSpec(path, n_samples=6, seq_len=32, seed=1)
    first = load_calibration(spec, tokenizer, [], prefix=0)
    again = load_calibration(spec, tokenizer, [], prefix=0)
    other = load_calibration(CalibrationSpec(path, 6, 32, seed=2), tokenizer, [], prefix=0)
    assert first.tokens.shape == (6, 32) and (first.tokens[:, 0] == 0).all()
    assert torch.equal(first.tokens, again.tokens) and not torch.equal(first.tokens, other.tokens)
    stream = tokenizer(PROSE, add_special_tokens=False)["input_ids"]
    window = first.tokens[0, 1:].tolist()
    joined = tokenizer(PROSE + "\n\n" + PROSE[::-1], add_special_tokens=False)["input_ids"]
    assert any(joined[i : i + 31] == window for i in range(len(joined)))  # a real window
    assert len(stream) > 31
    record = first.record()
    assert record["n_samples"] == 6 and len(record["sha256"]) == 64


def test_overlap_with_an_evaluation_item_is_refused(tmp_path, tokenizer):
    item = {"id": "x", "text": "an evaluation passage " + PROSE[100:400] + " ends here"}
    path = source(tmp_path, "harmless text " * 30, PROSE)
    with pytest.raises(InputError, match=r"calib.jsonl: calibration document 2 shares a run of 13"):
        load_calibration(CalibrationSpec(path, 2, 16), tokenizer, item_texts([item]))
    short = {"id": "y", "context": PROSE.split()[5] + " " + PROSE.split()[6]}  # 2 words: fine
    load_calibration(CalibrationSpec(path, 2, 16), tokenizer, item_texts([short]))


def test_item_texts_reach_nested_fields():
    texts = set(
        item_texts([{"id": "1", "context": "a", "choices": ["b", "c"], "meta": {"d": "e"}}])
    )
    assert {"a", "b", "c", "e"} <= texts


@pytest.mark.parametrize(
    "content,message",
    [
        ('{"text": "ok"}\nnot json\n', "calib.jsonl:2: not valid JSON"),
        ('{"body": "no text"}\n', "calib.jsonl:1: expected an object with a string 'text' field"),
        ("\n", "no calibration text"),
        ('{"text": "too short"}\n', "fewer than one calibration window"),
    ],
)
def test_bad_sources_name_the_file_and_line(tmp_path, tokenizer, content, message):
    path = tmp_path / "calib.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InputError, match=message):
        load_calibration(CalibrationSpec(path, 2, 64), tokenizer, [])
    with pytest.raises(InputError, match="calibration source not found"):
        load_calibration(CalibrationSpec(tmp_path / "none.jsonl", 2, 64), tokenizer, [])


def test_shipped_calibration_text_is_disjoint_from_every_shipped_suite(tokenizer):
    texts = []
    for suite_file in ("default.yaml", "long_context.yaml"):
        for task in load_suite(REPO / "tasks" / suite_file).tasks:
            if task.kind != "lm_eval":
                texts.extend(item_texts(load_items(task)))
    calib = load_calibration(CalibrationSpec(REPO / DEFAULT_SOURCE, 4, 64), tokenizer, texts)
    assert calib.tokens.shape == (4, 64)
