"""Build data/rare_copy.jsonl: exact copying of rare material, the long tail that
quantization damages first — long digit strings, uncommon proper names, non-Latin
scripts, code identifiers and rare English words. Each item is labelled with its kind.

    python tasks/make_rare.py [--seed 0]

Names, words and snippets are fixed lists below; digit strings and the order are drawn
from a seeded generator, so the same seed gives the same bytes.
"""

from __future__ import annotations

import random
from pathlib import Path

from jsonl_io import generator_parser, write_jsonl

OUT = Path(__file__).parent / "data" / "rare_copy.jsonl"
NAMES = ["Xochitl Quetzalli", "Siobhan Ni Bhriain", "Tjitske Hoekstra", "Oluwaseun Adeyemi", "Ngozi Okonjo",
         "Bartholomew Featherstonehaugh", "Aigerim Zhumabayeva", "Eero Saarinen-Kallio", "Ptolemy Zabriskie",
         "Wojciech Szczepanski"]  # fmt: skip
NON_LATIN = ["Москва река", "Καλημέρα κόσμε", "東京タワー", "שלום עולם", "नमस्ते दुनिया", "السلام عليكم",
             "Ελληνικά γράμματα", "Санкт-Петербург", "ภาษาไทย", "한국어 문장"]  # fmt: skip
CODE = ["get_user_by_id", "XMLHttpRequestFactory", "__init_subclass__", "np.linalg.svdvals", "kMaxBufferSize",
        "parse_rfc3339_ts", "useEffectOnce", "HTTP_429_TOO_MANY", "std::unique_ptr<Node>", "fetchAllAsync"]  # fmt: skip
RARE_WORDS = ["sesquipedalian", "defenestration", "petrichor", "callipygian", "floccinaucinihilipilification",
              "syzygy", "quincunx", "susurrus", "antidisestablishmentarianism", "crepuscular"]  # fmt: skip


def build(seed: int) -> list[dict]:
    rng = random.Random(seed)
    digits = [
        "".join(rng.choice("0123456789") for _ in range(n))
        for n in (8, 9, 10, 11, 12, 12, 13, 14, 15, 16)
    ]
    groups = {
        "digits": digits,
        "names": NAMES,
        "non_latin": NON_LATIN,
        "code": CODE,
        "rare_words": RARE_WORDS,
    }
    items = [{"id": f"{kind}-{i}", "text": text, "slices": [kind]} for kind, texts in groups.items()
             for i, text in enumerate(texts)]  # fmt: skip
    rng.shuffle(items)
    return items


def main() -> None:
    args = generator_parser(__doc__, OUT).parse_args()
    write_jsonl(args.out, build(args.seed))


if __name__ == "__main__":
    main()
