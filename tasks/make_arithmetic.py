"""Build the arithmetic data, every file in a seeded order (same seed, same bytes):

* ``add_1digit.jsonl``: every single-digit addition a + b (100), ``carry`` / ``no_carry``;
* ``sub_1digit.jsonl``: every a - b with 0 <= b <= a <= 9 (55);
* ``add_2digit_mc.jsonl``: 40 two-digit additions as multiple choice among the sum, the
  sum +-1 and the sum +-10, ``carry`` when the units carry;
* ``compare_mc.jsonl``: 40 "which is larger" questions between two two-digit numbers
  written with the same digits (47 vs 74);
* ``count.jsonl``: 40 counts to continue by a step of 1, 2, 3, 5 or 10 (``step:*`` slices).

    python tasks/make_arithmetic.py [--seed 0]
"""

from __future__ import annotations

import random
from pathlib import Path

from jsonl_io import generator_parser, write_jsonl

DATA = Path(__file__).parent / "data"
OUT = DATA / "add_1digit.jsonl"


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


def subtraction(seed: int) -> list[dict]:
    pairs = [(a, b) for a in range(10) for b in range(a + 1)]
    random.Random(f"sub:{seed}").shuffle(pairs)
    return [{"id": f"sub-{a}-{b}", "a": a, "b": b, "answer": str(a - b)} for a, b in pairs]


def two_digit_mc(seed: int, n: int = 40) -> list[dict]:
    rng = random.Random(f"add2:{seed}")
    items = []
    while len(items) < n:
        a, b = rng.randrange(10, 90), rng.randrange(10, 90)
        total = a + b
        choices = sorted(
            {total, total + 1, total - 1, total + 10 if rng.random() < 0.5 else total - 10}
        )
        rng.shuffle(choices)
        item_id = f"add2-{a}-{b}"
        if any(it["id"] == item_id for it in items):
            continue
        carry = (a % 10) + (b % 10) >= 10
        items.append({"id": item_id, "a": a, "b": b, "choices": [str(c) for c in choices],
                      "answer": choices.index(total), "slices": ["carry" if carry else "no_carry"]})  # fmt: skip
    return items


def comparison_mc(seed: int, n: int = 40) -> list[dict]:
    rng = random.Random(f"cmp:{seed}")
    pairs = [(x, y) for x in range(1, 10) for y in range(1, 10) if x != y]
    rng.shuffle(pairs)
    items = []
    for x, y in pairs[:n]:
        first, second = 10 * x + y, 10 * y + x
        choices = [str(first), str(second)]
        items.append({"id": f"cmp-{first}-{second}", "a": first, "b": second, "choices": choices,
                      "answer": choices.index(str(max(first, second)))})  # fmt: skip
    return items


def counting(seed: int, n: int = 40) -> list[dict]:
    """Continue a count by a fixed step: ``12, 14, 16, 18,`` -> ``20`` (steps 1, 2, 3, 5, 10)."""
    rng = random.Random(f"count:{seed}")
    items = []
    for i in range(n):
        step, start = rng.choice((1, 2, 3, 5, 10)), rng.randrange(1, 60)
        shown = [start + step * k for k in range(4)]
        items.append({"id": f"count-{i:02d}", "sequence": ", ".join(map(str, shown)) + ",",
                      "answer": str(start + 4 * step), "slices": [f"step:{step}"]})  # fmt: skip
    return items


def main() -> None:
    args = generator_parser(__doc__, DATA).parse_args()
    write_jsonl(args.out / "add_1digit.jsonl", build(args.seed))
    write_jsonl(args.out / "sub_1digit.jsonl", subtraction(args.seed))
    write_jsonl(args.out / "add_2digit_mc.jsonl", two_digit_mc(args.seed))
    write_jsonl(args.out / "compare_mc.jsonl", comparison_mc(args.seed))
    write_jsonl(args.out / "count.jsonl", counting(args.seed))


if __name__ == "__main__":
    main()
