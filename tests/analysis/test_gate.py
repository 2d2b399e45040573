"""The gate: policies as data, noise-aware decisions, verdicts, JUnit, the CLI."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from harness.analysis.gate import apply_policy, decide, partial_failures, verdict
from harness.analysis.policy import MaxDrop, MinTop1, Policy, default_rules, parse_policy
from harness.cli import EXIT_GATE_FAILED, EXIT_OK, EXIT_USAGE, main
from harness.errors import InputError
from harness.manifest import VariantRecord, parse
from harness.records import Comparison, Finding
from harness.store import RunStore
from tests.synthetic import SIZES, gate, make_items, manifest, records, store_run


def comparison(**overrides) -> Comparison:
    fields = dict(variant="v", task="t", slice="arithmetic", metric="acc", n=100, base_value=0.8, value=0.7,
                  delta=-0.1, delta_ci=(-0.2, 0.0), loss=0.125, loss_ci=(0.0, 0.25), lost=10, gained=0,
                  flip_rate=0.1, flip_rate_ci=(0.04, 0.16), kld=0.01, kld_ci=(0.0, 0.02), top1=0.95,
                  top1_ci=(0.9, 0.99), p_value=0.01, q_value=0.02, level=0.99)  # fmt: skip
    return Comparison(**{**fields, **overrides})


def test_an_arithmetic_only_regression_is_flagged_on_arithmetic_only():
    items = make_items(11, {"w4": {"noise": 0.01, "drop": {"arithmetic": 0.3}}})
    result = gate(items, ["w4"])
    failed = {(f.task, f.slice) for f in result.findings if f.severity == "fail"}
    assert ("mc_arithmetic", "arithmetic") in failed
    assert all(task == "mc_arithmetic" for task, _ in failed)
    assert not result.variants[0].passed and result.recommended_variant is None


def test_noise_alone_fails_in_at_most_5_percent_of_1000_variants():
    """Under the null (flips both ways, no net loss), the family-wise false-fail rate of
    the whole gate over 1,000 simulated variants is at most alpha."""
    fails = 0
    for seed in range(1000):
        items = make_items(1000 + seed, {"w8": {"noise": 0.04, "kld": 0.02, "top1": 0.96}}, n=100)
        fails += not gate(items, ["w8"]).variants[0].passed
    assert fails <= 50, f"{fails} of 1000 noise-only variants failed"


def test_recommendation_is_the_most_aggressive_passing_variant():
    effects = {
        "w8": {"noise": 0.01},
        "w4": {"noise": 0.01},
        "w3": {"drop": {"rare": 0.5}},
        "w2": {"drop": {"general": 0.8}},
    }
    result = gate(make_items(12, effects), list(effects))
    passed = {v.variant for v in result.variants if v.passed}
    assert passed == {"w8", "w4"}
    assert result.recommended_variant == "w4" and result.passed
    required = gate(make_items(12, effects), list(effects), require="w3")
    assert not required.passed and required.recommended_variant == "w4"
    with pytest.raises(InputError, match="no variant 'w5'"):
        gate(make_items(12, effects), list(effects), require="w5")


@pytest.mark.parametrize(
    "loss,ci,severity",
    [
        (0.01, (0.0, 0.02), "pass"),
        (0.03, (0.01, 0.05), "warn"),
        (0.05, (0.03, 0.07), "fail"),
        (0.02, (0.0, 0.04), "pass"),
    ],
)
def test_decisions_are_noise_aware(loss, ci, severity):
    finding = decide(MaxDrop(0.02), comparison(loss=loss, loss_ci=ci))
    assert finding.severity == severity
    if severity == "warn":
        assert "more items would settle it" in finding.message


def test_min_rules_mirror_max_rules():
    from harness.analysis.policy import MinTop1

    assert decide(MinTop1(0.9), comparison(top1=0.85, top1_ci=(0.80, 0.88))).severity == "fail"
    assert decide(MinTop1(0.9), comparison(top1=0.88, top1_ci=(0.80, 0.95))).severity == "warn"
    assert decide(MinTop1(0.9), comparison(top1=0.92, top1_ci=(0.85, 0.97))).severity == "pass"


def test_the_most_specific_rule_of_a_kind_decides():
    policy = parse_policy(
        {"rules": [{"kind": "max_flip_rate", "slices": ["arith*"], "tolerance": 0.2}]}, "p"
    )
    findings = apply_policy(policy, [comparison(), comparison(slice="general")])
    flips = {f.slice: f for f in findings if f.metric == "max_flip_rate"}
    assert (
        flips["arithmetic"].threshold == 0.05
    )  # built-in exact-name rule beats the user's pattern
    assert flips["general"].threshold == 0.10
    mine = parse_policy(
        {"rules": [{"kind": "max_flip_rate", "slices": ["arithmetic"], "tolerance": 0.2}]}, "p"
    )
    assert [
        f.threshold for f in apply_policy(mine, [comparison()]) if f.metric == "max_flip_rate"
    ] == [0.2]
    only = parse_policy({"defaults": False, "rules": [{"kind": "max_kld", "tolerance": 1}]}, "p")
    assert [f.metric for f in apply_policy(only, [comparison()])] == ["max_kld"]


def stored_run(tmp_path, effects) -> RunStore:
    return store_run(
        tmp_path / "run", make_items(14, effects), manifest({v: SIZES[v] for v in effects})
    )


def test_gate_command_exit_codes_and_outputs(tmp_path, capsys):
    effects = {
        "w8": {"noise": 0.01},
        "w2": {"drop": {"general": 0.9, "arithmetic": 0.9, "rare": 0.9}},
    }
    store = stored_run(tmp_path, effects)
    junit = tmp_path / "out" / "gate.xml"
    assert main(["gate", str(store.root), "--junit", str(junit)]) == EXIT_OK
    out = capsys.readouterr().out
    assert (
        "recommended: w8" in out
        and "w2" in out
        and "gate (harm mode): PASSED (needs any variant to pass)" in out
    )
    record = json.loads((store.root / "gate.json").read_text())
    assert record["recommended_variant"] == "w8" and record["passed"] is True
    assert {k["slice"] for k in record["knees"]} >= {"all", "arithmetic"}
    assert junit.exists() and (store.root / "report.md").read_text().count("Gate: PASSED") == 1
    assert main(["gate", str(store.root), "--require", "w2"]) == EXIT_GATE_FAILED
    assert "gate (harm mode): FAILED (needs variant w2 to pass)" in capsys.readouterr().out
    strict = tmp_path / "strict.yaml"
    strict.write_text("gate:\n  rules:\n    - {kind: max_kld, tolerance: 0.0001}\n")
    assert main(["gate", str(store.root), "--policy", str(strict)]) == EXIT_GATE_FAILED
    assert main(["gate", str(store.root), "--policy", str(tmp_path / "missing.yaml")]) == EXIT_USAGE
    assert main(["gate", str(tmp_path / "nothing")]) == EXIT_USAGE
    assert main(["report", str(store.root)]) == EXIT_OK


def test_too_few_items_can_warn_but_never_fail():
    tiny = comparison(n=1, top1=0.75, top1_ci=(0.75, 0.75))  # one item: a zero-width interval
    finding = decide(MinTop1(0.9), tiny)
    assert finding.severity == "warn" and "too few to settle" in finding.message
    assert decide(MinTop1(0.9), comparison(n=10, top1=0.75, top1_ci=(0.7, 0.8))).severity == "fail"
    strict = parse_policy({"min_items": 1}, "p")
    assert [f.severity for f in apply_policy(strict, [tiny]) if f.metric == "min_top1"] == ["fail"]
    with pytest.raises(InputError, match="'min_items' must be a positive integer"):
        parse_policy({"min_items": 0}, "p")


def test_what_could_not_be_measured_fails():
    """A non-finite comparison (NaN or infinite outputs) is a failing finding, never
    dropped: the variant cannot pass on silence."""
    nan_loss = comparison(loss=math.nan, loss_ci=(math.nan, math.nan))
    finding = decide(MaxDrop(0.02), nan_loss)
    assert finding.severity == "fail" and "could not be computed" in finding.message
    inf_kld = comparison(kld=math.inf, kld_ci=(math.inf, math.inf))
    from harness.analysis.policy import MaxKLD

    assert decide(MaxKLD(0.1), inf_kld).severity == "fail"
    result = verdict(
        apply_policy(Policy(default_rules()), [nan_loss]), records({"v": (4, 4.0, 10)})
    )
    assert not result.passed and result.recommended_variant is None


def test_a_variant_with_non_finite_scores_fails_the_gate():
    items = make_items(21, {"w8": {"noise": 0.0}})
    broken = items.copy()
    broken.loc[(broken.variant == "w8") & (broken.task == "text"), "nll"] = math.nan
    result = gate(broken, ["w8"])
    assert not result.variants[0].passed
    assert any("could not be computed" in f.message for f in result.findings if f.task == "text")


def test_the_policy_used_is_recorded_and_reused(tmp_path, capsys):
    """``gate --policy`` records its policy in the run; ``report`` then re-gates with it
    (not the suite's or the built-in one), so gate.json does not flip."""
    store = stored_run(tmp_path, {"w8": {"noise": 0.01}})
    strict = tmp_path / "strict.yaml"
    strict.write_text("gate:\n  rules:\n    - {kind: max_kld, tolerance: 0.0001}\n")
    assert main(["gate", str(store.root), "--policy", str(strict)]) == EXIT_GATE_FAILED
    recorded = store.manifest().policy
    assert recorded["source"] == str(strict)
    assert {"kind": "max_kld", "tolerance": 0.0001, "slices": ["*"], "tasks": ["*"]} in recorded[
        "gate"
    ]["rules"]
    assert main(["report", str(store.root)]) == EXIT_OK
    record = json.loads((store.root / "gate.json").read_text())
    assert record["passed"] is False and record["policy"]["source"] == str(strict)


def test_among_passing_variants_of_equal_weights_the_narrowest_kv_cache_is_recommended():
    base = {"method": "kv-cache", "bits": 16, "effective_bits": 16.0, "model_bytes": 100}
    variants = {"baseline": VariantRecord.parse({**base, "method": "none"}, "baseline", "test")} | {
        f"kv{b}": VariantRecord.parse({**base, "kv_cache": {"bits": b}}, f"kv{b}", "test")
        for b in (8, 4, 2)
    }
    failing = Finding("accuracy_drop", "fail", "kv2", "t", "all", "acc", 0.5, 0.02, (0.3, 0.7), "x")
    assert verdict([failing], variants).recommended_variant == "kv4"


def test_a_variant_stopped_early_never_passes_a_re_gating():
    stop = Finding(
        "max_kld", "fail", "w2", "mc", "all", "acc", 0.5, 0.1, (0.3, 0.9), "FAIL: w2 · mc/all: ..."
    )
    manifest = {"adaptive_failures": {"w2": dataclasses.asdict(stop)}}
    added = partial_failures(parse(json.loads(json.dumps(manifest))), [])
    assert len(added) == 1 and added[0].severity == "fail" and added[0].variant == "w2"
    assert added[0].rule == "complete_evaluation" and "evaluated in part" in added[0].message
    assert partial_failures(parse(manifest), [stop]) == []  # it still fails: nothing to add
    assert partial_failures(parse({}), []) == []
