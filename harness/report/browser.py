"""Render a report in headless Chromium and check it: every image loaded, no console
errors, no request left the page. Writes a full-page screenshot beside the report.

    python -m harness.report.browser results/demo     # or: make report-check RUN=results/demo

Needs Debian's ``chromium`` and the ``playwright`` package (the dev extra); Playwright
drives the system browser, it downloads nothing.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import InputError

CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip


@dataclass
class PageCheck:
    images: int = 0
    broken_images: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)  # anything fetched besides the page itself
    screenshot: Path | None = None

    @property
    def ok(self) -> bool:
        return self.images > 0 and not (self.broken_images or self.console_errors or self.requests)


def find_chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def check_page(html: Path, screenshot: Path | None = None, width: int = 1280) -> PageCheck:
    """Open ``html`` offline in headless Chromium and report what went wrong, if anything."""
    executable = find_chromium()
    if executable is None:
        raise InputError("no Chromium found; install Debian's package: apt-get install chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise InputError("the browser check needs playwright: pip install -e '.[dev]'") from None
    result = PageCheck()
    url = Path(html).resolve().as_uri()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": width, "height": 900})
        page.on(
            "console", lambda m: result.console_errors.append(m.text) if m.type == "error" else None
        )
        page.on("pageerror", lambda e: result.console_errors.append(str(e)))
        page.on(
            "request",
            lambda r: (
                result.requests.append(r.url)
                if r.url != url and not r.url.startswith("data:")
                else None
            ),
        )
        page.goto(url, wait_until="load")
        states = page.eval_on_selector_all(
            "img", "imgs => imgs.map(i => [i.alt, i.complete && i.naturalWidth > 0])"
        )
        result.images = len(states)
        result.broken_images = [alt for alt, loaded in states if not loaded]
        if screenshot is not None:
            page.screenshot(path=str(screenshot), full_page=True)
            result.screenshot = screenshot
        browser.close()
    return result


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m harness.report.browser RUN", file=sys.stderr)
        return 2
    run = Path(args[0])
    html = run / "report.html"
    if not html.exists():
        print(f"no report at {html}; run `qharness report {run}` first", file=sys.stderr)
        return 2
    try:
        check = check_page(html, run / "report.png")
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{html}: {check.images} images, {len(check.broken_images)} broken, "
          f"{len(check.console_errors)} console errors, {len(check.requests)} outside requests; "
          f"screenshot {check.screenshot}")  # fmt: skip
    for problem in [*check.broken_images, *check.console_errors, *check.requests]:
        print(f"  {problem}")
    return 0 if check.ok else 1


if __name__ == "__main__":
    sys.exit(main())
