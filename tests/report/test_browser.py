"""The HTML page rendered in headless Chromium (skipped where none is installed)."""

from __future__ import annotations

import pytest

from harness.report.browser import check_page, find_chromium


@pytest.mark.skipif(
    find_chromium() is None, reason="Debian's chromium is not installed (.ci/run installs it)"
)
def test_html_renders_in_headless_chromium(run):
    check = check_page(run / "report.html", run / "report.png")
    assert check.images == 5 and not check.broken_images
    assert not check.console_errors and not check.requests
    assert (run / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
