"""The ``qharness`` argument parser: one function per command."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

EXIT_OK, EXIT_GATE_FAILED, EXIT_USAGE = 0, 1, 2

DESCRIPTION = """\
Quantize a language model at several bit widths, evaluate every variant item by item
against the 16-bit baseline, and report where quality breaks.

examples:
  qharness run --model default --methods rtn --bits 8,4,3,2 --suite tasks/default.yaml --out results/demo
  qharness gate results/demo --junit gate.xml      # exit 0: pass, 1: gate failed, 2: bad input
  qharness report results/demo
  qharness compare results/before results/after      # paired on the items both runs share
"""


def default_threads() -> int:
    """Leave one core free: on a shared machine a busy core stalls every thread."""
    return max(1, (os.cpu_count() or 1) - 1)


def _bits(text: str) -> list[int]:
    try:
        values = [int(b) for b in text.split(",") if b.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"bits must be comma-separated integers, not {text!r}"
        ) from None
    if not values:
        raise argparse.ArgumentTypeError("give at least one bit width")
    return values


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {value}")
    return value


def _group_size(text: str) -> int | None:
    if text.lower() in ("none", "channel", "0", "-1"):
        return None
    return _positive(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qharness",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    for add in (
        _add_run,
        _add_diagnose,
        _add_suites,
        _add_gate,
        _add_plan,
        _add_report,
        _add_compare,
    ):
        add(commands)
    return parser


def _add_run(commands) -> None:
    """``qharness run``: the model, quantization, evaluation, output and gate options."""
    run = commands.add_parser("run", help="quantize and evaluate every variant, then write reports",
                              description="Quantize the model with each method at each bit width, "
                              "evaluate the baseline and every variant on the suite, store per-item "
                              "rows, and write the reports. Rerunning the same command resumes.")  # fmt: skip
    model = run.add_argument_group("model")
    model.add_argument("--model", default="default",
                       help="'default' (SmolLM2-135M-Instruct), a Hugging Face id, a local folder or a .gguf file")  # fmt: skip
    model.add_argument("--revision", default=None, help="model revision (branch, tag or commit)")
    model.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                       help="dtype to load and score in (default float32: bf16 flips items on its own)")  # fmt: skip
    model.add_argument(
        "--trust-remote-code", action="store_true", help="allow the model's own Python code"
    )
    model.add_argument("--device", default="auto",
                       help="cpu, cuda, cuda:N or auto (default: CUDA when available)")  # fmt: skip
    quant = run.add_argument_group("quantization")
    quant.add_argument("--methods", default=None,
                       help=f"comma-separated methods, each at every bit width it supports (default: rtn; known: {_method_names()})")  # fmt: skip
    quant.add_argument("--bits", type=_bits, default=None,
                       help="comma-separated bit widths (default: 8,4,3,2)")  # fmt: skip
    quant.add_argument("--variants", type=Path, default=None, metavar="FILE",
                       help="explicit configurations instead of --methods x --bits: a YAML/JSON list "
                       "such as [{method: gptq, bits: 4, group_size: 64}]")  # fmt: skip
    quant.add_argument("--variant-models", default=None, metavar="A,B",
                       help="pre-quantized files of the base model to gate as variants (GGUF); with "
                       "neither --methods nor --bits, the only variants")  # fmt: skip
    quant.add_argument("--kv-bits", type=_bits, default=None, metavar="B[,B]",
                       help="also evaluate every variant, and the base weights, with the KV cache "
                       "quantized to these widths (8, 4, 2; transformers' quantized cache)")  # fmt: skip
    quant.add_argument("--group-size", type=_group_size, default=None,
                       help="weights per scale along the input dimension; 'channel' for one per row "
                       "(default: each method's own, rtn/gptq 128)")  # fmt: skip
    quant.add_argument("--symmetric", action="store_true", help="symmetric grid (no zero-point)")
    quant.add_argument("--calibration", type=Path, default=None, metavar="FILE",
                       help="JSONL text for calibration-based methods (default: tasks/data/calibration.jsonl)")  # fmt: skip
    quant.add_argument("--calibration-samples", type=_positive, default=32,
                       help="calibration windows (default 32)")  # fmt: skip
    quant.add_argument("--calibration-length", type=_positive, default=256,
                       help="tokens per calibration window (default 256)")  # fmt: skip
    quant.add_argument("--layer-bits", type=Path, default=None, metavar="FILE",
                       help="mixed precision: JSON {layer pattern: bits}, e.g. the plan.json of qharness diagnose")  # fmt: skip
    evaluation = run.add_argument_group("evaluation")
    evaluation.add_argument(
        "--suite", type=Path, default=Path("tasks/default.yaml"), help="suite YAML file"
    )
    evaluation.add_argument(
        "--limit", type=_positive, default=None, help="evaluate only the first N items of each task"
    )
    evaluation.add_argument(
        "--seed", type=int, default=0, help="seed for few-shot sampling (default 0)"
    )
    evaluation.add_argument(
        "--batch-size", type=_positive, default=8, help="sequences per forward pass (default 8)"
    )
    evaluation.add_argument("--threads", type=_positive, default=default_threads(),
                            help=f"CPU threads (default {default_threads()}: all cores but one)")  # fmt: skip
    evaluation.add_argument("--adaptive", action="store_true",
                            help="stop evaluating a variant on a task once the gate's failure is settled "
                            "(saves items on collapsed variants; passing variants see every item)")  # fmt: skip
    evaluation.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                            help="fan variants out on Ray: a local Ray, or the cluster at ADDRESS "
                            "(each worker loads the model itself; needs qharness[ray])")  # fmt: skip
    evaluation.add_argument("--no-memory-check", action="store_true",
                            help="run even when the memory estimate stated before loading exceeds the free memory")  # fmt: skip
    output = run.add_argument_group("output")
    output.add_argument(
        "--out", type=Path, default=None, help="run folder (default: results/<model>-<suite>)"
    )
    output.add_argument("--overwrite", action="store_true",
                        help="replace a stored run whose model, suite, settings or code differ (default: refuse)")  # fmt: skip
    output.add_argument("--no-progress", action="store_true", help="no progress bar")
    _gate_options(run.add_argument_group("gate"))


def _add_diagnose(commands) -> None:
    """``qharness diagnose``."""
    diag = commands.add_parser("diagnose", help="explain the knee: outliers, rounding error, collapse, error growth",
                               description="Measure why quantization hurts: weight outliers per layer, rounding "
                               "error and collapse per layer and bit width, error growth through the layers, "
                               "per-block sensitivity with a mixed-precision plan, and whether the base model "
                               "already lies on a low-bit grid. Writes OUT/diagnostics.md, CSVs and plots.")  # fmt: skip
    diag.add_argument("--model", default="default", help="as for run")
    diag.add_argument("--revision", default=None)
    diag.add_argument("--trust-remote-code", action="store_true")
    diag.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    diag.add_argument("--methods", default="rtn", help="comma-separated methods (default: rtn)")
    diag.add_argument(
        "--bits", type=_bits, default=[8, 4, 3, 2], help="bit widths (default: 8,4,3,2)"
    )
    diag.add_argument("--group-size", type=_group_size, default=None)
    diag.add_argument("--symmetric", action="store_true")
    diag.add_argument(
        "--suite",
        type=Path,
        default=Path("tasks/default.yaml"),
        help="probe inputs come from its items",
    )
    diag.add_argument("--probes", type=_positive, default=16, help="probe inputs (default 16)")
    diag.add_argument(
        "--probe-tokens", type=_positive, default=128, help="tokens per probe (default 128)"
    )
    diag.add_argument(
        "--keep", type=_positive, default=3, help="blocks the plan keeps at 8 bits (default 3)"
    )
    diag.add_argument("--threads", type=_positive, default=default_threads())
    diag.add_argument("--out", type=Path, default=Path("results/diagnostics"), help="output folder")
    diag.set_defaults(layer_bits=None, dtype="float32", variants=None)


def _add_suites(commands) -> None:
    """``qharness suites validate``."""
    suites = commands.add_parser(
        "suites", help="check suite files", description="Check suite files."
    )
    suite_commands = suites.add_subparsers(dest="suites_command", metavar="ACTION", required=True)
    validate = suite_commands.add_parser("validate", help="validate suite YAML files and their data",
                                         description="Check each suite and every data file it names; print "
                                         "one line per suite. Exit 2 at the first problem.")  # fmt: skip
    validate.add_argument("paths", type=Path, nargs="+", metavar="PATH", help="suite YAML files")


def _add_gate(commands) -> None:
    """``qharness gate``."""
    gate = commands.add_parser("gate", help="apply the gate policy to a stored run (no model needed)",
                               description="Compare every variant to the baseline item by item, apply "
                               "the gate policy, print the verdict and write gate.json. Exit 0 when "
                               "the target passes, 1 when it fails, 2 on bad input.")  # fmt: skip
    gate.add_argument("run_dir", type=Path, metavar="RUN", help="a results/<run> folder")
    _gate_options(gate)


def _add_plan(commands) -> None:
    """``qharness plan``."""
    plan = commands.add_parser("plan", help="what a suite can see: per slice, the smallest loss each rule detects",
                               description="Before spending compute: per task x slice and gate rule, the items "
                               "present, the minimum detectable effect (80%% power at the gate's level) and the "
                               "items needed to resolve the tolerance. From the model's tokenizer alone (no "
                               "weights), or from a stored run's baseline and variants (--from).")  # fmt: skip
    plan.add_argument(
        "suite", type=Path, nargs="?", default=Path("tasks/default.yaml"), help="suite YAML file"
    )
    plan.add_argument(
        "--model", default="default", help="the model whose tokenizer cuts the length slices"
    )
    plan.add_argument("--from", dest="run_dir", type=Path, default=None, metavar="RUN",
                      help="a stored run: its measured baseline accuracy and its variants' spread")  # fmt: skip
    plan.add_argument(
        "--policy", type=Path, default=None, help="gate policy YAML (default: the suite's)"
    )
    plan.add_argument("--gate-mode", choices=("harm", "safety"), default=None)


def _add_report(commands) -> None:
    """``qharness report``."""
    report = commands.add_parser(
        "report", help="rewrite the reports of a stored run (no model needed)"
    )
    report.add_argument("run_dir", type=Path, metavar="RUN", help="a results/<run> folder")


def _add_compare(commands) -> None:
    """``qharness compare``."""
    comp = commands.add_parser("compare", help="two stored runs side by side, paired on shared items",
                               description="Compare run B against run A item by item on the items both "
                               "evaluated: every variant name the runs share (two models: their "
                               "baselines; before/after a change: every variant), or the pairs given "
                               "with --pair. Writes compare.md and compare.csv. Needs no model.")  # fmt: skip
    comp.add_argument("run_a", type=Path, metavar="RUN_A", help="the reference run")
    comp.add_argument("run_b", type=Path, metavar="RUN_B", help="the run compared against it")
    comp.add_argument("--pair", action="append", default=None, metavar="A_VARIANT:B_VARIANT",
                      help="compare these two variants (repeatable), e.g. rtn-w4g128:gptq-w4g128")  # fmt: skip
    comp.add_argument("--out", type=Path, default=None,
                      help="output folder (default: results/compare-<A>-vs-<B>)")  # fmt: skip


def _gate_options(group) -> None:
    group.add_argument("--policy", type=Path, default=None,
                       help="gate policy YAML (default: the suite's gate block, else built-in rules)")  # fmt: skip
    group.add_argument("--require", default=None, metavar="VARIANT",
                       help="the gate passes only if this variant passes (default: if any variant passes)")  # fmt: skip
    group.add_argument(
        "--junit", type=Path, default=None, metavar="FILE", help="also write JUnit XML here"
    )
    group.add_argument("--gate-mode", choices=("harm", "safety"), default=None,
                       help="harm: fail what the intervals show harmful (default); safety: pass only what "
                       "they show within tolerance, failing slices too small to show it (see qharness plan)")  # fmt: skip


def _version() -> str:
    from harness import __version__

    return __version__


def _method_names() -> str:
    from harness.quant import METHODS

    return ", ".join(METHODS.names())
