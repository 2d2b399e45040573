"""Shared by the generator scripts: their command line and deterministic JSONL output."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def generator_parser(doc: str, default_out: Path, seeded: bool = True) -> argparse.ArgumentParser:
    """``--out`` (and ``--seed``) for a generator whose module docstring is ``doc``."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    if seeded:
        parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--out", type=Path, default=default_out, help=f"output (default {default_out.name})"
    )
    return parser


def write_jsonl(path: Path, items: list[dict]) -> None:
    """One JSON object per line, UTF-8, in the given order; the folder is created."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "".join(json.dumps(it, ensure_ascii=False) + "\n" for it in items), encoding="utf-8"
    )
    print(f"wrote {len(items)} items to {path}")
