"""Build tasks/data/calibration.jsonl: calibration text for GPTQ and other
calibration-based methods, disjoint from every evaluation item.

Source: the Python 3.11 FAQ (Debian's ``python3.11-doc``, the same PSF-licensed
documentation as the general-text task, but other pages: the tutorial is evaluated,
the FAQ never is). Prose paragraphs only, grouped into documents of about ``--words``
words; the harness draws seeded token windows from them and refuses any window source
that shares a 13-word run with an evaluation item.

    python tasks/make_calibration.py            # fetches the .deb with apt-get download
    python tasks/make_calibration.py --sources DIR   # DIR: the docs' _sources/faq folder
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from jsonl_io import generator_parser, write_jsonl
from make_general_text import build, fetch_sources

PAGES = ["general", "programming", "design", "library", "extending", "windows", "gui", "installed"]
OUT = Path(__file__).parent / "data" / "calibration.jsonl"


def main() -> None:
    parser = generator_parser(__doc__, OUT, seeded=False)
    parser.add_argument("--sources", type=Path, help="the FAQ's _sources folder (default: fetch)")
    parser.add_argument("--words", type=int, default=300, help="words per document (default 300)")
    parser.add_argument(
        "--max-items", type=int, default=200, help="documents to keep (default 200)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sources = args.sources or fetch_sources(Path(tmp), "faq")
        write_jsonl(args.out, build(sources, args.words, args.max_items, PAGES, prefix="faq"))


if __name__ == "__main__":
    main()
