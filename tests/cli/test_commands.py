"""The command line: exit codes, one-line errors, an end-to-end run on a tiny model."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from harness.cli import EXIT_GATE_FAILED, EXIT_OK, EXIT_USAGE, main


def run_cli(args: list[str], capsys) -> tuple[int, str]:
    try:
        code = main(args)
    except SystemExit as exc:  # argparse's own usage errors
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.err


@pytest.mark.parametrize(
    "args,message",
    [
        (["run", "--methods", "rtm"], "unknown quantization method 'rtm'; did you mean 'rtn'"),
        (["run", "--bits", "9"], "no chosen method supports 9 bits (rtn: 8, 7, 6, 5, 4, 3, 2)"),
        (["run", "--bits", "1,4"], "no chosen method supports 1 bits (rtn: 8, 7, 6, 5, 4, 3, 2)"),
        (
            ["run", "--methods", "gguf", "--bits", "8", "--group-size", "64"],
            "method 'gguf' has no option(s) group_size",
        ),
        (
            ["run", "--methods", "gguf", "--bits", "4", "--variants", "v.yaml"],
            "--variants replaces --methods",
        ),
        (["run", "--variants", "no/such.yaml"], "--variants: file not found: no/such.yaml"),
        (["run", "--bits", "four"], "bits must be comma-separated integers"),
        (["run", "--suite", "no/such/suite.yaml"], "suite file not found: no/such/suite.yaml"),
        (["run", "--limit", "0"], "expected a positive integer"),
        (["run", "--group-size", "-4"], "expected a positive integer"),
        (["report", "no/such/run"], "no qharness run at no/such/run"),
        (["run", "--layer-bits", "no/plan.json"], "--layer-bits: file not found"),
        (["gate", "no/such/run"], "no qharness run at no/such/run"),
        (["diagnose", "--bits", "1"], "no chosen method supports 1 bits"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(args, message, capsys):
    code, err = run_cli(args, capsys)
    assert code == EXIT_USAGE
    assert message in err
    assert "Traceback" not in err


def test_missing_model_folder_is_a_usage_error(tiny_suite, tmp_path, capsys):
    code, err = run_cli(["run", "--model", str(tmp_path / "nope"), "--suite", str(tiny_suite),
                         "--out", str(tmp_path / "out")], capsys)  # fmt: skip
    assert code == EXIT_USAGE and "model folder not found" in err
    assert not (tmp_path / "out").exists()


def test_help_reads_well(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "qharness run --model default" in out and "report" in out


def test_end_to_end_on_a_tiny_model(tiny_model_dir, tiny_suite, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["run", "--model", str(tiny_model_dir), "--suite", str(tiny_suite), "--out", str(out),
            "--methods", "rtn", "--bits", "8,2", "--group-size", "32", "--threads", "1", "--no-progress"]  # fmt: skip
    code, err = run_cli(args, capsys)
    assert code == EXIT_OK, err
    for name in ("manifest.json", "items.parquet", "summary.csv", "report.md", "plots/knee.png"):
        assert (out / name).exists(), name
    items = pd.read_parquet(out / "items.parquet")
    assert len(items) == 3 * (4 + 5 + 5)  # variants x items
    assert set(items["variant"]) == {"baseline", "rtn-w8g32", "rtn-w2g32"}
    variants = items[items["variant"] != "baseline"]
    assert variants["kld"].notna().all() and variants["top1_agree"].between(0, 1).all()
    summary = pd.read_csv(out / "summary.csv")
    ppl = summary[(summary["task"] == "text") & (summary["slice"] == "all")].set_index("variant")[
        "value"
    ]
    assert {"general", "ctx<=512"} <= set(summary["slice"])
    assert ppl["rtn-w2g32"] > ppl["rtn-w8g32"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["variants"]["rtn-w8g32"]["config"]["bits"] == 8
    assert manifest["model"]["trust_remote_code"] is False
    assert manifest["settings"]["threads"] == 1
    assert "rtn-w2g32" in (out / "report.md").read_text()

    # the same command again finds everything done and recomputes nothing
    parts = {p: p.stat().st_mtime_ns for p in (out / "parts").glob("*.parquet")}
    code, _ = run_cli(args, capsys)
    assert code == EXIT_OK
    assert parts == {p: p.stat().st_mtime_ns for p in (out / "parts").glob("*.parquet")}

    # an added bit width only evaluates the new variant
    code, _ = run_cli([*args, "--bits", "8,4,2"], capsys)  # the last --bits wins
    assert code == EXIT_OK
    assert parts == {p: p.stat().st_mtime_ns for p in parts}
    assert "rtn-w4g32" in set(pd.read_parquet(out / "items.parquet")["variant"])

    # the report is rebuilt from stored results alone
    (out / "report.md").unlink()
    code, _ = run_cli(["report", str(out)], capsys)
    assert code == EXIT_OK and "rtn-w4g32" in (out / "report.md").read_text()
    assert "diagnostics/diagnostics.md" not in (out / "report.md").read_text()
    (out / "diagnostics").mkdir()
    (out / "diagnostics" / "diagnostics.md").write_text("# Diagnostics\n")
    run_cli(["report", str(out)], capsys)
    assert "[why it breaks](diagnostics/diagnostics.md)" in (out / "report.md").read_text()


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the no-CUDA error")
def test_cuda_without_a_gpu_is_a_usage_error(capsys):
    code, err = run_cli(["run", "--device", "cuda"], capsys)
    assert code == EXIT_USAGE and "no CUDA device is available" in err
    code, err = run_cli(["run", "--device", "tpu9"], capsys)
    assert code == EXIT_USAGE and "unknown device 'tpu9'" in err


def test_several_methods_with_calibration_on_a_tiny_model(
    tiny_model_dir, tiny_suite, tmp_path, capsys
):
    calib = tmp_path / "calib.jsonl"
    prose = " ".join(f"Sentence {i} says something plain about item {i % 5}." for i in range(200))
    calib.write_text(json.dumps({"text": prose}) + "\n", encoding="utf-8")
    out = tmp_path / "run"
    common = ["run", "--model", str(tiny_model_dir), "--suite", str(tiny_suite), "--out", str(out),
              "--calibration", str(calib), "--calibration-samples", "8", "--calibration-length", "32",
              "--threads", "1", "--no-progress"]  # fmt: skip
    g32 = ["--group-size", "32"]
    code, err = run_cli([*common, "--methods", "rtn,gptq,bnb", "--bits", "4,3", *g32], capsys)
    assert code == EXIT_USAGE and "method 'bnb' has no option(s) group_size" in err
    code, err = run_cli([*common, "--methods", "bnb", "--bits", "3"], capsys)
    assert code == EXIT_USAGE and "no chosen method supports 3 bits (bnb: 8, 4)" in err

    code, err = run_cli([*common, "--methods", "rtn,gptq", "--bits", "4,3", *g32], capsys)
    assert code in (EXIT_OK, EXIT_GATE_FAILED), err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["calibration"]["n_samples"] == 8 and manifest["calibration"]["seq_len"] == 32
    assert manifest["variants"]["gptq-w3g32"]["calibration"] == manifest["calibration"]
    assert "calibration" not in manifest["variants"]["rtn-w3g32"]
    items = pd.read_parquet(out / "items.parquet")
    assert set(items["variant"]) == {
        "baseline",
        "rtn-w4g32",
        "rtn-w3g32",
        "gptq-w4g32",
        "gptq-w3g32",
    }

    # bnb has no 3-bit format: skipped, and the report says so
    code, err = run_cli([*common, "--methods", "bnb,rtn", "--bits", "4,3"], capsys)
    assert code in (EXIT_OK, EXIT_GATE_FAILED), err
    assert "skipping bnb at 3 bits: not supported (supports 8, 4)" in err
    assert "bnb at 3 bits: not supported" in (out / "report.md").read_text()
    assert "bnb-w4g64" in set(pd.read_parquet(out / "items.parquet")["variant"])

    # a stored variant whose calibration changed is refused, not mixed
    calib.write_text(json.dumps({"text": prose + " More text."}) + "\n", encoding="utf-8")
    code, err = run_cli([*common, "--methods", "gptq", "--bits", "4", *g32], capsys)
    assert code == EXIT_USAGE and "was stored with another calibration" in err


def test_calibration_overlapping_the_suite_is_refused(tiny_model_dir, tiny_suite, tmp_path, capsys):
    calib = tmp_path / "calib.jsonl"
    leaked = "The quick brown fox number 2 jumps over the lazy dog. " * 3
    calib.write_text(json.dumps({"text": "Preface. " + leaked * 4}) + "\n", encoding="utf-8")
    code, err = run_cli(["run", "--model", str(tiny_model_dir), "--suite", str(tiny_suite),
                         "--out", str(tmp_path / "run"), "--methods", "gptq", "--bits", "4",
                         "--group-size", "32", "--calibration", str(calib), "--no-progress"], capsys)  # fmt: skip
    assert code == EXIT_USAGE and "shares a run of 13 words with an evaluation item" in err


def test_an_adaptive_stop_is_recorded_and_survives_a_looser_policy(
    tiny_model_dir, tmp_path, capsys
):
    rows = [{"id": f"m{i}", "context": f"{i} plus one is", "choices": [str(i + 1), str(i + 2), "cat"],
             "answer": 0, "slices": ["odd" if i % 2 else "even"]} for i in range(48)]  # fmt: skip
    (tmp_path / "mc.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    suite = tmp_path / "suite.yaml"
    suite.write_text("""name: strict
version: "1"
tasks:
  - {name: mc, kind: multiple_choice, data: mc.jsonl, slices: [arithmetic], prompt: "{context}"}
gate: {defaults: false, min_items: 5, rules: [{kind: max_kld, tolerance: 1.0e-9}]}
""")
    out = tmp_path / "run"
    code, err = run_cli(["run", "--model", str(tiny_model_dir), "--suite", str(suite), "--out", str(out),
                         "--methods", "rtn", "--bits", "2", "--group-size", "32", "--threads", "1",
                         "--no-progress", "--adaptive"], capsys)  # fmt: skip
    assert code == EXIT_GATE_FAILED, err
    manifest = json.loads((out / "manifest.json").read_text())
    record = manifest["adaptive"]["rtn-w2g32/mc"]
    assert record["evaluated"] < record["of"] == 48 and record["stopped_by"].startswith("FAIL")
    assert manifest["adaptive_failures"]["rtn-w2g32"]["rule"].startswith("max_kld")
    items = pd.read_parquet(out / "items.parquet")
    assert (items["variant"] == "rtn-w2g32").sum() == record["evaluated"]

    lenient = tmp_path / "lenient.yaml"
    lenient.write_text("rules: [{kind: max_kld, tolerance: 100}]\ndefaults: false\n")
    code, err = run_cli(["gate", str(out), "--policy", str(lenient)], capsys)
    assert code == EXIT_GATE_FAILED, err
    gate = json.loads((out / "gate.json").read_text())
    assert [f["rule"] for f in gate["findings"] if f["severity"] == "fail"] == [
        "complete_evaluation"
    ]
    assert gate["recommended_variant"] is None


def test_adaptive_runs_are_recorded_and_never_mixed_with_full_ones(
    tiny_model_dir, tiny_suite, tmp_path, capsys
):
    out = tmp_path / "run"
    args = ["run", "--model", str(tiny_model_dir), "--suite", str(tiny_suite), "--out", str(out),
            "--methods", "rtn", "--bits", "2", "--group-size", "32", "--threads", "1", "--no-progress"]  # fmt: skip
    code, err = run_cli([*args, "--adaptive"], capsys)
    assert code in (EXIT_OK, EXIT_GATE_FAILED), err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["settings"]["adaptive"] is True
    assert set(manifest["adaptive"]) == {"rtn-w2g32/text", "rtn-w2g32/mc", "rtn-w2g32/gen"}
    assert "Adaptive stopping:" in (out / "report.md").read_text()
    code, err = run_cli(args, capsys)  # without the flag: a different run, refused
    assert code == EXIT_USAGE and "--overwrite" in err


def test_a_window_longer_than_the_models_context_is_a_usage_error(tiny_model_dir, tmp_path, capsys):
    """The tiny model's context is 512 tokens: a 1024-token perplexity window is refused
    before anything is written (it was a traceback from the scorer)."""
    data = tmp_path / "t.jsonl"
    data.write_text('{"id": "a", "text": "some text"}\n')
    suite = tmp_path / "s.yaml"
    suite.write_text(
        f"name: s\ntasks: [{{name: long, kind: perplexity, data: {data}, window: 1024}}]\n"
    )
    out = tmp_path / "run"
    code = main(["run", "--model", str(tiny_model_dir), "--suite", str(suite), "--out", str(out), "--bits", "8",
                 "--no-progress"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == EXIT_USAGE and "window 1024 is longer than the model's context of 512" in err
    assert not out.exists()
