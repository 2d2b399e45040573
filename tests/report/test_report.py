"""Reports from stored results: the Markdown summary, the self-contained HTML page (checked
in headless Chromium), byte-for-byte regeneration, and the views behind them."""

from __future__ import annotations

from harness.cli import EXIT_OK, main


def test_report_regenerates_every_file_byte_for_byte(run):
    files = [
        p
        for p in run.rglob("*")
        if p.is_file() and p.name != "manifest.json" and "parts" not in p.parts
    ]
    before = {p: p.read_bytes() for p in files}
    for p in files:
        if p.suffix in (".md", ".html", ".png", ".csv", ".json"):
            p.unlink()
    assert main(["report", str(run)]) == EXIT_OK
    assert {p: p.read_bytes() for p in files} == before


HOSTILE = "<script>alert(1)</script></textarea>]]>\x01\x1b[31m$x$|*"


def test_text_from_a_suite_is_inert_in_every_report_and_the_junit_file_parses(
    tiny_model_dir, tmp_path
):
    """Task, slice and item text with markup, CDATA ends and control characters is
    escaped in report.html and report.md, and the JUnit file is valid XML (read back by
    two real parsers, expat and minidom)."""
    import json
    import xml.dom.minidom
    import xml.etree.ElementTree as ET

    items = [{"id": f"{HOSTILE}{i}", "context": f"{HOSTILE} {i} plus one is",
              "choices": [f"{i + 1}{HOSTILE}", str(i + 2)], "answer": 0, "slices": [HOSTILE]}
             for i in range(12)]  # fmt: skip
    (tmp_path / "mc.jsonl").write_text("".join(json.dumps(x) + "\n" for x in items))
    suite = tmp_path / "suite.yaml"
    suite.write_text(f"name: {json.dumps(HOSTILE)}\nversion: {json.dumps(HOSTILE)}\n"
                     f"tasks: [{{name: {json.dumps(HOSTILE)}, kind: multiple_choice, data: mc.jsonl}}]\n")  # fmt: skip
    out, junit = tmp_path / "run", tmp_path / "gate.xml"
    code = main(["run", "--model", str(tiny_model_dir), "--suite", str(suite), "--out", str(out),
                 "--bits", "8,2", "--group-size", "32", "--no-progress", "--junit", str(junit)])  # fmt: skip
    assert code in (0, 1)
    page = (out / "report.html").read_text(encoding="utf-8")
    summary = (out / "report.md").read_text(encoding="utf-8")
    for text in (page, summary):
        assert "<script" not in text and "</textarea>" not in text and "]]>" not in text
        assert "\x01" not in text and "\x1b" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # shown, as text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&lt;/textarea&gt;\\]\\]&gt;" in summary
    assert "\\x01" in page
    tree = ET.parse(junit)  # expat: rejects control characters and broken markup
    xml.dom.minidom.parse(str(junit))
    texts = [t for el in tree.iter() for t in (*el.attrib.values(), el.text or "")]
    assert any("<script>alert(1)</script></textarea>]]>\\x01" in t for t in texts)  # as text
