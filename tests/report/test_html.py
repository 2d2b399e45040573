"""report.html: one self-contained page."""

from __future__ import annotations

import base64
import re


def test_html_is_self_contained(run):
    html = (run / "report.html").read_text()
    assert "<script" not in html and not re.search(r"(src|href)=\"(https?:)?//", html)
    sources = re.findall(r'<img alt="[^"]*" src="([^"]+)"', html)
    assert len(sources) == 5
    for src in sources:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    for section in (
        "verdict",
        "knee",
        "methods",
        "heatmap",
        "flips",
        "examples",
        "savings",
        "manifest",
    ):
        assert f'id="{section}"' in html
