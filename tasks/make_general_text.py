"""Build tasks/data/general_text.jsonl: English prose for perplexity.

Source: the Python 3.11 tutorial (reStructuredText sources shipped in Debian's
``python3.11-doc`` package, ``/usr/share/doc/python3.11/html/_sources/tutorial``).
Licence: the Python documentation is distributed under the PSF License Agreement
(permissive; https://docs.python.org/3/license.html), which permits redistribution
with its notice kept; see tasks/data/LICENSES.md.

Only prose paragraphs are kept (code blocks, directives and headings are dropped; inline
markup is reduced to its text), then grouped into items of about ``--words`` words
(about 400 tokens, one scoring window each), the first ``--max-items`` of them.

    python tasks/make_general_text.py            # fetches the .deb with apt-get download
    python tasks/make_general_text.py --sources DIR
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from pathlib import Path

from jsonl_io import generator_parser, write_jsonl

PAGES = ["appetite", "interpreter", "introduction", "controlflow", "datastructures", "modules",
         "inputoutput", "errors", "classes", "stdlib", "floatingpoint", "whatnow"]  # fmt: skip
OUT = Path(__file__).parent / "data" / "general_text.jsonl"

_ROLE = re.compile(r":[a-z:]+:`(?:([^`<]*?)\s*<[^`>]*>|~?([^`]*))`")
_LINK = re.compile(r"`([^`<]*?)\s*<[^`>]*>`_+")
_LITERAL = re.compile(r"``([^`]*)``")
_EMPHASIS = re.compile(r"\*\*?([^*\s][^*]*?)\*\*?")
_REF = re.compile(r"`([^`]*)`_*")


def clean_inline(text: str) -> str:
    text = _ROLE.sub(lambda m: (m.group(1) or m.group(2) or "").lstrip("!.~"), text)
    text = _LINK.sub(r"\1", text)
    text = _LITERAL.sub(r"\1", text)
    text = _EMPHASIS.sub(r"\1", text)
    text = _REF.sub(r"\1", text)
    return re.sub(r"\s+", " ", text).strip()


def prose_paragraphs(rst: str) -> list[str]:
    """Unindented paragraphs of running text; code, directives and headings dropped."""
    paragraphs, skip_indented = [], False
    for block in re.split(r"\n\s*\n", rst):
        lines = block.splitlines()
        if not lines:
            continue
        indented = lines[0].startswith((" ", "\t"))
        if indented and skip_indented:
            continue
        skip_indented = False
        first = lines[0].strip()
        if (
            indented
            or first.startswith((".. ", ">>>", "|", "+", "="))
            or re.fullmatch(r"[*=\-~^#]+", first)
        ):
            skip_indented = first.startswith(".. ")
            continue
        if any(re.fullmatch(r"[*=\-~^#]{3,}", ln.strip()) for ln in lines):  # heading
            continue
        text = " ".join(ln.strip() for ln in lines)
        if text.endswith("::"):  # "text::" reads "text:"; "text ::" reads "text"
            skip_indented = True
            text = text[:-3] if text.endswith(" ::") else text[:-1]
        text = clean_inline(text)
        if len(text.split()) >= 20 and not text.startswith(("*", "-", "#")):
            paragraphs.append(text)
    return paragraphs


def build(
    sources: Path, words: int, max_items: int, pages=PAGES, prefix: str = "tutorial"
) -> list[dict]:
    items, current, page_of = [], [], None
    for page in pages:
        for paragraph in prose_paragraphs(
            (sources / f"{page}.rst.txt").read_text(encoding="utf-8")
        ):
            current.append(paragraph)
            page_of = page_of or page
            if sum(len(p.split()) for p in current) >= words:
                items.append({"id": f"{prefix}-{len(items):02d}", "source": f"{prefix}/{page_of}",
                              "text": "\n\n".join(current)})  # fmt: skip
                current, page_of = [], None
                if len(items) == max_items:
                    return items
    return items


def fetch_sources(workdir: Path, folder: str = "tutorial") -> Path:
    subprocess.run(["apt-get", "download", "python3.11-doc"], cwd=workdir, check=True)
    deb = next(workdir.glob("python3.11-doc_*.deb"))
    subprocess.run(["dpkg-deb", "-x", str(deb), str(workdir / "x")], check=True)
    return workdir / "x/usr/share/doc/python3.11/html/_sources" / folder


def main() -> None:
    parser = generator_parser(__doc__, OUT, seeded=False)
    parser.add_argument(
        "--sources", type=Path, help="the tutorial's _sources folder (default: fetch the .deb)"
    )
    parser.add_argument("--words", type=int, default=300, help="words per item (default 300)")
    parser.add_argument(
        "--max-items", type=int, default=24, help="items to keep (default 24, ~10k tokens)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sources = args.sources or fetch_sources(Path(tmp))
        write_jsonl(args.out, build(sources, args.words, args.max_items))


if __name__ == "__main__":
    main()
