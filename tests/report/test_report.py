"""Reports from stored results: the Markdown summary, the self-contained HTML page (checked
in headless Chromium), byte-for-byte regeneration, and the views behind them."""

from __future__ import annotations

import base64
import re

import pandas as pd
import pytest

from harness.cli import EXIT_OK, main
from harness.records import Finding
from harness.report.browser import check_page, find_chromium
from harness.report.plots import pareto_front
from harness.report.views import broken_examples
from tests.synthetic import make_items, manifest, records, store_run

EFFECTS = {f"w{b}": fx for b, fx in [(8, {"noise": 0.01}), (4, {"drop": {"arithmetic": 0.3}}),
                                     (3, {"drop": {"arithmetic": 0.6}, "ppl_shift": 0.2}),
                                     (2, {"drop": {"general": 0.9, "arithmetic": 0.9, "rare": 0.9}, "ppl_shift": 2})]}  # fmt: skip
SIZES = {"w8": (8, 8.25, 500), "w4": (4, 4.25, 300), "w3": (3, 3.25, 250), "w2": (2, 2.25, 200)}


@pytest.fixture
def run(tmp_path):
    store = store_run(
        tmp_path / "run", make_items(3, EFFECTS, n=60), manifest(SIZES) | {"run_name": "run"}
    )
    assert main(["gate", str(store.root)]) == EXIT_OK
    return store.root


def test_markdown_summary_is_short_and_complete(run):
    text = (run / "report.md").read_text()
    assert len(text.splitlines()) < 60
    assert "**Gate: PASSED**" in text and "recommended variant: **w8**" in text
    for variant in ("baseline", *EFFECTS):
        assert f"| {variant} |" in text
    for link in ("report.html", "plots/knee_slices.png", "plots/pareto.png", "plots/heatmap.png"):
        assert f"]({link})" in text and (run / link).exists()


def test_reports_name_the_scoring_dtype(tmp_path):
    fields = manifest(SIZES) | {"run_name": "bf16", "model": {"source": "m", "dtype": "bfloat16"}}
    store = store_run(tmp_path / "bf16", make_items(3, EFFECTS, n=30), fields)
    assert main(["report", str(store.root)]) in (0, 1)
    for name in ("report.md", "report.html"):
        text = (store.root / name).read_text()
        assert "scored in bfloat16" in text.lower() and "float32" not in text


def test_markdown_and_terminal_stay_short_with_many_variants(tmp_path, capsys):
    effects = {f"m{i}-w{b}": {"noise": 0.01 * b} for i in range(4) for b in (8, 4, 3, 2)}
    sizes = {name: (int(name[-1]), float(name[-1]) + 0.25, 100 * int(name[-1])) for name in effects}
    info = manifest(sizes)
    for name in effects:
        info["variants"][name]["method"] = name.split("-")[0]
    store = store_run(tmp_path / "many", make_items(4, effects, n=30), info)
    main(["gate", str(store.root)])
    text = (store.root / "report.md").read_text()
    assert len(text.splitlines()) < 60 and "**Methods × bits**" in text and "| m3 |" in text
    out = capsys.readouterr().out.strip().splitlines()  # the terminal summary
    assert len(out) <= 15 and "more variants in report.md" in "\n".join(out)
    assert pd.read_csv(store.root / "power.csv")["resolves"].dtype == bool


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


def test_broken_examples_show_both_outputs():
    row = {"slices": ("arithmetic",), "correct_norm": None, "score": 0.0, "nll": 1.0, "gold_logprob": -1.0,
           "n_tokens": 1, "kld": None, "top1_agree": None, "margin": None}  # fmt: skip
    items = pd.DataFrame([
        {**row, "variant": "baseline", "task": "add", "item_id": "1", "correct": True, "prediction": "7", "target": "7"},
        {**row, "variant": "baseline", "task": "add", "item_id": "2", "correct": False, "prediction": "3", "target": "4"},
        {**row, "variant": "w2", "task": "add", "item_id": "1", "correct": False, "prediction": "9", "target": "7"},
        {**row, "variant": "w2", "task": "add", "item_id": "2", "correct": False, "prediction": "5", "target": "4"},
    ])  # fmt: skip
    finding = Finding(rule="max_drop", severity="fail", variant="w2", task="add", slice="all", metric="exact_match",
                      observed=0.5, threshold=0.05, ci=(0.1, 0.9), message="lost")  # fmt: skip
    examples = broken_examples(items, [finding], records({"w2": (2, 2.5, 10)}))
    assert examples == [
        {
            "variant": "w2",
            "task": "add",
            "item_id": "1",
            "target": "7",
            "baseline": "7",
            "output": "9",
        }
    ]


def test_pareto_front_keeps_only_undominated_points():
    sizes = [100, 60, 50, 30, 30, 20]
    quality = [100, 99, 90, 95, 80, 10]
    assert pareto_front(sizes, quality) == [5, 3, 1, 0]


@pytest.mark.skipif(
    find_chromium() is None, reason="Debian's chromium is not installed (.ci/run installs it)"
)
def test_html_renders_in_headless_chromium(run):
    check = check_page(run / "report.html", run / "report.png")
    assert check.images == 5 and not check.broken_images
    assert not check.console_errors and not check.requests
    assert (run / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


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
