"""qharness plan: what a suite can see, from a tokenizer alone or from a stored run."""

from __future__ import annotations

from harness.cli import EXIT_OK, main
from tests.synthetic import make_items, manifest, store_run


def test_plan_from_the_model_lists_every_slice_and_rule_without_loading_weights(
    tiny_model_dir, tiny_suite, capsys, monkeypatch
):
    def no_weights(*args, **kwargs):
        raise AssertionError("plan loaded the model's weights")

    monkeypatch.setattr("harness.model.load.load_model", no_weights)
    code = main(["plan", str(tiny_suite), "--model", str(tiny_model_dir)])
    out = capsys.readouterr().out.splitlines()
    assert code == EXIT_OK
    assert "assume the baseline gets every item right" in out[1]
    rows = [line.split() for line in out[3:-1]]
    assert {(r[0], r[1]) for r in rows} >= {("mc", "all"), ("mc", "arithmetic"), ("mc", "easy"),
                                             ("gen", "arithmetic"), ("text", "general"), ("mc", "ctx<=512")}  # fmt: skip
    mc_drop = next(r for r in rows if r[:2] == ["mc", "arithmetic"] and r[3] == "max_drop")
    assert mc_drop[2] == "5" and mc_drop[-2:] == ["cannot", "resolve"]  # 5 items, 2% tolerance
    text_ppl = next(r for r in rows if r[0] == "text" and r[3] == "max_ppl_increase")
    assert text_ppl[6] == "n/a"  # a perplexity rule needs a variant's spread
    assert out[-1].split()[0].isdigit() and "cannot resolve their tolerance" in out[-1]


def test_plan_from_a_run_uses_its_accuracy_and_its_variants_spread(tmp_path, capsys):
    effects = {"w4": {"noise": 0.05, "kld": 0.02}}
    store = store_run(
        tmp_path / "run", make_items(1, effects, n=200), manifest({"w4": (4, 4.25, 300)})
    )
    before = (store.root / "manifest.json").read_bytes()
    code = main(["plan", "--from", str(store.root), "--gate-mode", "safety"])
    out = capsys.readouterr().out.splitlines()
    assert code == EXIT_OK and "(safety mode)" in out[0]
    assert (store.root / "manifest.json").read_bytes() == before  # planning only reads the run
    kld = next(
        line.split()
        for line in out
        if line.startswith("text ") and " all " in line and "max_kld" in line
    )
    assert kld[6] != "n/a" and float(kld[6]) > 0.1  # tolerance 0.1 plus the spread
    drop = next(
        line.split()
        for line in out
        if line.startswith("mc_general ") and " all " in line and "max_drop" in line
    )
    assert drop[2] == "200"
