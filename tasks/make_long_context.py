"""Build the long-context data: passkey retrieval and key-value lookup, with the needle
at several depths, at about 512, 1k, 2k and 4k tokens, and passkeys at 7.5k (near
SmolLM2's 8k limit; ~24 tokens per filler block, ~16 per key-value line).

    python tasks/make_long_context.py [--seed 0]

Writes ``data/passkey.jsonl`` and ``data/kv_lookup.jsonl``. Each item carries its
``length`` and ``depth`` as slice labels (``len:2k``, ``depth:50``) so a regression can be
traced to where the needle sat. Deterministic: the same seed gives the same bytes.
"""

from __future__ import annotations

import random
import string
from pathlib import Path

from jsonl_io import generator_parser, write_jsonl

DATA = Path(__file__).parent / "data"
FILLER = (
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
)
FILLER_TOKENS = 24  # measured with SmolLM2's tokenizer
KV_LINE_TOKENS = 16
LENGTHS = {"512": 512, "1k": 1024, "2k": 2048, "4k": 4096, "7.5k": 7680}  # 8192 is the limit
DEPTHS = (10, 30, 50, 70, 90)  # five depths: 10 items per task at 512 and 1k tokens


def passkey_items(rng: random.Random) -> list[dict]:
    items = []
    for name, tokens in LENGTHS.items():
        blocks = max(2, (tokens - 60) // FILLER_TOKENS)
        for depth in DEPTHS:
            key = str(rng.randrange(10000, 100000))
            at = round(blocks * depth / 100)
            needle = f"The pass key is {key}. Remember it. {key} is the pass key. "
            text = FILLER * at + needle + FILLER * (blocks - at)
            items.append({"id": f"passkey-{name}-d{depth}", "context": text.strip(), "answer": key,
                          "slices": [f"len:{name}", f"depth:{depth}"]})  # fmt: skip
    return items


def kv_items(rng: random.Random) -> list[dict]:
    items = []
    for name, tokens in list(LENGTHS.items())[:3]:
        pairs = max(4, (tokens - 40) // KV_LINE_TOKENS)
        keys = set()
        while len(keys) < pairs:
            keys.add(
                "".join(rng.choice(string.ascii_uppercase) for _ in range(2))
                + str(rng.randrange(10, 100))
            )
        keys = sorted(keys)  # a set's order depends on the hash seed: sort, then shuffle
        rng.shuffle(keys)
        values = {k: str(rng.randrange(1000, 10000)) for k in keys}
        lines = "".join(f"The value of key {k} is {values[k]}.\n" for k in keys)
        for depth in DEPTHS:
            key = keys[min(pairs - 1, round((pairs - 1) * depth / 100))]
            items.append({"id": f"kv-{name}-d{depth}", "context": lines + f"\nThe value of key {key} is",
                          "answer": values[key], "slices": [f"len:{name}", f"depth:{depth}"]})  # fmt: skip
    return items


def main() -> None:
    args = generator_parser(__doc__, DATA).parse_args()
    write_jsonl(args.out / "passkey.jsonl", passkey_items(random.Random(f"passkey:{args.seed}")))
    write_jsonl(args.out / "kv_lookup.jsonl", kv_items(random.Random(f"kv:{args.seed}")))


if __name__ == "__main__":
    main()
