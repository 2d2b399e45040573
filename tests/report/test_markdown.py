"""report.md: short, complete, and naming how the run was scored."""

from __future__ import annotations

import pandas as pd

from harness.cli import main
from tests.synthetic import EFFECTS, SIZES, make_items, manifest, store_run


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
