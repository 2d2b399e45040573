"""Calibration text for calibration-based methods (GPTQ, AWQ).

Seeded token windows are drawn from a declared JSONL source (a ``text`` field per
line; default ``tasks/data/calibration.jsonl``, Python FAQ prose). Calibration must
never see evaluation items: any source document that shares a run of
:data:`OVERLAP_WORDS` words with an evaluation item is refused.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from harness.data.suites import read_jsonl
from harness.errors import InputError
from harness.records import CalibrationSpec

OVERLAP_WORDS = 13  # the n-gram length of the GPT-3 contamination check
DEFAULT_SOURCE = Path("tasks/data/calibration.jsonl")


@dataclass(frozen=True)
class Calibration:
    """``tokens``: ``[n_samples, seq_len]`` token ids; ``sha256`` of the source file."""

    spec: CalibrationSpec
    tokens: torch.Tensor
    sha256: str

    def record(self) -> dict:
        """What the run manifest keeps of it."""
        return calibration_record(self.spec)


def calibration_record(spec: CalibrationSpec) -> dict:
    """The source, its sha256 and the sampling settings (no tokenizing needed)."""
    try:
        digest = hashlib.sha256(Path(spec.source).read_bytes()).hexdigest()
    except FileNotFoundError:
        raise InputError(f"calibration source not found: {spec.source}") from None
    return {"source": str(spec.source), "sha256": digest, "n_samples": spec.n_samples,
            "seq_len": spec.seq_len, "seed": spec.seed}  # fmt: skip


def read_texts(path: Path) -> list[str]:
    """The ``text`` field of every line of a JSONL file, with file:line errors."""
    if not Path(path).is_file():
        raise InputError(f"calibration source not found: {path}")
    texts = []
    for lineno, record in read_jsonl(Path(path)):
        if not isinstance(record.get("text"), str):
            raise InputError(f"{path}:{lineno}: expected an object with a string 'text' field")
        texts.append(record["text"])
    if not texts:
        raise InputError(f"{path}: no calibration text")
    return texts


def _shingles(text: str) -> set[int]:
    words = text.split()
    return {
        hash(" ".join(words[i : i + OVERLAP_WORDS])) for i in range(len(words) - OVERLAP_WORDS + 1)
    }


def check_disjoint(texts: list[str], evaluation_texts: Iterable[str], source: Path) -> None:
    """Refuse calibration text that shares a run of 13 words with an evaluation item."""
    seen = set().union(*(_shingles(t) for t in evaluation_texts))
    for index, text in enumerate(texts):
        if not seen.isdisjoint(_shingles(text)):
            raise InputError(
                f"{source}: calibration document {index + 1} shares a run of {OVERLAP_WORDS} "
                "words with an evaluation item; calibration must not see evaluation data"
            )


def item_texts(items: Iterable[dict]) -> Iterable[str]:
    """Every string in the items (prompts, texts, choices), for the overlap check."""
    for item in items:
        stack = list(item.values())
        while stack:
            value = stack.pop()
            if isinstance(value, str):
                yield value
            elif isinstance(value, list | dict):
                stack.extend(value.values() if isinstance(value, dict) else value)


def load_calibration(
    spec: CalibrationSpec, tokenizer, evaluation_texts: Iterable[str], prefix: int | None = None
) -> Calibration:
    """Tokenize the source as one stream and draw ``n_samples`` seeded windows of
    ``seq_len`` tokens (``prefix``, e.g. BOS, first when given)."""
    texts = read_texts(spec.source)
    check_disjoint(texts, evaluation_texts, spec.source)
    stream = tokenizer("\n\n".join(texts), add_special_tokens=False)["input_ids"]
    body = spec.seq_len - (prefix is not None)
    if len(stream) < body + 1:
        raise InputError(f"{spec.source}: {len(stream)} tokens, fewer than one calibration "
                         f"window of {spec.seq_len}")  # fmt: skip
    generator = torch.Generator().manual_seed(spec.seed)
    starts = torch.randint(0, len(stream) - body + 1, (spec.n_samples,), generator=generator)
    ids = torch.tensor(stream)
    windows = torch.stack([ids[s : s + body] for s in starts.tolist()])
    if prefix is not None:
        windows = torch.cat([torch.full((spec.n_samples, 1), prefix), windows], dim=1)
    digest = hashlib.sha256(Path(spec.source).read_bytes()).hexdigest()
    return Calibration(spec, windows, digest)
