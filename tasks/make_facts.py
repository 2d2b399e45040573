"""Build data/facts_cloze.jsonl: common facts as cloze multiple choice ("The capital of
France is" -> " Paris" among four). The facts are a fixed list; the order of the choices
is drawn from a seeded generator, so the same seed gives the same bytes.

    python tasks/make_facts.py [--seed 0]
"""

from __future__ import annotations

import random
from pathlib import Path

from jsonl_io import generator_parser, write_jsonl

OUT = Path(__file__).parent / "data" / "facts_cloze.jsonl"
FACTS = [
    ("The capital of France is", "Paris", ["Rome", "Berlin", "Madrid"]),
    ("The capital of Japan is", "Tokyo", ["Beijing", "Seoul", "Bangkok"]),
    ("The capital of Italy is", "Rome", ["Paris", "Vienna", "Athens"]),
    ("The capital of Germany is", "Berlin", ["Munich", "Vienna", "Zurich"]),
    ("The capital of Egypt is", "Cairo", ["Nairobi", "Tunis", "Lagos"]),
    ("The largest planet in the solar system is", "Jupiter", ["Mars", "Venus", "Mercury"]),
    ("The planet closest to the Sun is", "Mercury", ["Jupiter", "Neptune", "Saturn"]),
    ("Water freezes at zero degrees", "Celsius", ["Kelvin", "Newton", "Rankine"]),
    ("The chemical symbol for gold is", "Au", ["Ag", "Fe", "Pb"]),
    ("The chemical symbol for water is", "H2O", ["CO2", "NaCl", "O3"]),
    ("A triangle has three", "sides", ["wheels", "legs", "eyes"]),
    ("A week has seven", "days", ["hours", "years", "months"]),
    ("The opposite of hot is", "cold", ["big", "fast", "loud"]),
    ("The opposite of up is", "down", ["left", "green", "soft"]),
    ("Bees make", "honey", ["milk", "silk", "wool"]),
    ("Cows give", "milk", ["honey", "eggs", "wool"]),
    ("The sun rises in the", "east", ["west", "north", "south"]),
    ("The color of grass is", "green", ["purple", "orange", "pink"]),
    ("The color of the clear sky is", "blue", ["red", "brown", "black"]),
    ("Romeo and Juliet was written by William", "Shakespeare", ["Wordsworth", "Blake", "Dickens"]),
    ("The Mona Lisa was painted by Leonardo da", "Vinci", ["Silva", "Costa", "Luca"]),
    ("The first man on the Moon was Neil", "Armstrong", ["Young", "Collins", "Glenn"]),
    ("The theory of relativity was developed by Albert", "Einstein", ["Newton", "Bohr", "Darwin"]),
    ("The largest ocean on Earth is the", "Pacific", ["Arctic", "Indian", "Southern"]),
    ("The longest river in Africa is the", "Nile", ["Thames", "Danube", "Volga"]),
    ("The tallest mountain on Earth is Mount", "Everest", ["Kilimanjaro", "Fuji", "Blanc"]),
    ("Ice is frozen", "water", ["sand", "metal", "air"]),
    ("A baby cat is called a", "kitten", ["puppy", "calf", "foal"]),
    ("A baby dog is called a", "puppy", ["kitten", "lamb", "chick"]),
    ("The currency of the United States is the", "dollar", ["euro", "yen", "peso"]),
]


def build(seed: int) -> list[dict]:
    rng = random.Random(seed)
    items = []
    for i, (context, gold, wrong) in enumerate(FACTS):
        choices = [gold, *wrong]
        rng.shuffle(choices)
        items.append(
            {
                "id": f"fact-{i:02d}",
                "context": context,
                "choices": choices,
                "answer": choices.index(gold),
            }
        )
    return items


def main() -> None:
    args = generator_parser(__doc__, OUT).parse_args()
    write_jsonl(args.out, build(args.seed))


if __name__ == "__main__":
    main()
