"""Build tasks/data/add_1digit.jsonl: every single-digit addition a + b (100 items),
labelled ``carry`` when the sum has two digits and ``no_carry`` otherwise.

The items are all 100 ordered pairs, shuffled with a fixed seed, so the file is the same
bytes on every run.

    python tasks/make_arithmetic.py [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

OUT = Path(__file__).parent / "data" / "add_1digit.jsonl"


def build(seed: int) -> list[dict]:
    pairs = [(a, b) for a in range(10) for b in range(10)]
    random.Random(seed).shuffle(pairs)
    return [
        {
            "id": f"add-{a}-{b}",
            "a": a,
            "b": b,
            "answer": str(a + b),
            "slices": ["carry" if a + b >= 10 else "no_carry"],
        }  # fmt: skip
        for a, b in pairs
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    items = build(args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(json.dumps(it) + "\n" for it in items), encoding="utf-8")
    print(f"wrote {len(items)} items to {args.out}")


if __name__ == "__main__":
    main()
