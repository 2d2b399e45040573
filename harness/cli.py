"""The ``qharness`` command line. Exit codes: 0 pass, 1 gate failed, 2 usage or input error."""

from __future__ import annotations

import argparse
import os
import sys
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

    suites = commands.add_parser(
        "suites", help="check suite files", description="Check suite files."
    )
    suite_commands = suites.add_subparsers(dest="suites_command", metavar="ACTION", required=True)
    validate = suite_commands.add_parser("validate", help="validate suite YAML files and their data",
                                         description="Check each suite and every data file it names; print "
                                         "one line per suite. Exit 2 at the first problem.")  # fmt: skip
    validate.add_argument("paths", type=Path, nargs="+", metavar="PATH", help="suite YAML files")

    gate = commands.add_parser("gate", help="apply the gate policy to a stored run (no model needed)",
                               description="Compare every variant to the baseline item by item, apply "
                               "the gate policy, print the verdict and write gate.json. Exit 0 when "
                               "the target passes, 1 when it fails, 2 on bad input.")  # fmt: skip
    gate.add_argument("run_dir", type=Path, metavar="RUN", help="a results/<run> folder")
    _gate_options(gate)

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

    report = commands.add_parser(
        "report", help="rewrite the reports of a stored run (no model needed)"
    )
    report.add_argument("run_dir", type=Path, metavar="RUN", help="a results/<run> folder")

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
    return parser


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


def _variants(args) -> tuple[list, list[str]]:
    """The variants to evaluate and the (method, bits) pairs skipped as unsupported."""
    from harness.quant.variants import with_kv_cache

    variants, skipped = _weight_variants(args)
    return with_kv_cache(variants, getattr(args, "kv_bits", None) or []), skipped


def _weight_variants(args) -> tuple[list, list[str]]:
    from harness.errors import InputError
    from harness.quant.variants import artifact_variants, load_variants, sweep

    models = [
        m.strip() for m in (getattr(args, "variant_models", None) or "").split(",") if m.strip()
    ]
    artifacts = artifact_variants(models)
    if args.variants is not None:
        if args.methods is not None or args.bits is not None:
            raise InputError("--variants replaces --methods and --bits; give one or the other")
        listed = load_variants(args.variants)
        taken = {v.name for v in listed} & {v.name for v in artifacts}
        if taken:
            raise InputError(
                f"variant {sorted(taken)[0]!r} is named twice (--variants and --variant-models)"
            )
        return listed + artifacts, []
    if artifacts and args.methods is None and args.bits is None:
        return artifacts, []
    methods = [m.strip() for m in (args.methods or "rtn").split(",") if m.strip()]
    options = {}
    if args.group_size is not None:
        options["group_size"] = args.group_size
    if args.symmetric:
        options["symmetric"] = True
    if args.layer_bits is not None:
        options["layer_bits"] = _read_layer_bits(args.layer_bits)
    variants, skipped = sweep(methods, args.bits or [8, 4, 3, 2], options)
    clash = {v.name for v in variants} & {v.name for v in artifacts}
    if clash:
        raise InputError(
            f"--variant-models: variant name {sorted(clash)[0]!r} is taken by a method variant"
        )
    return variants + artifacts, skipped


def _read_layer_bits(path: Path) -> tuple[tuple[str, int], ...]:
    import json

    from harness.errors import InputError

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"--layer-bits: file not found: {path}") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    if not isinstance(data, dict) or not all(isinstance(b, int) for b in data.values()):
        raise InputError(f"{path}: expected a JSON object of layer pattern -> bits")
    return tuple(data.items())


def _stopwatch(prefix: str):
    import time

    start = time.perf_counter()
    return lambda message: print(
        f"{prefix} [{time.perf_counter() - start:6.1f}s] {message}", file=sys.stderr
    )


def cmd_diagnose(args) -> int:
    import torch

    from harness.data.suites import load_items, load_suite
    from harness.diagnose.weights import diagnose
    from harness.engine.kinds import kind_of
    from harness.model.load import load_model, resolve_device
    from harness.records import ModelSpec
    from harness.report.diagnostics import write_diagnostics

    configs = [v.config for v in _variants(args)[0] if v.config is not None]
    resolve_device(args.device)
    suite = load_suite(args.suite)
    pools = []
    for task in suite.tasks:
        if not kind_of(task).itemized:
            continue  # the kind loads its own documents
        items = load_items(task)
        field = task.text_field if task.kind == "perplexity" else None
        pools.append([it[field] if field else task.prompt.format(**it) for it in items])
    texts = [pool[i] for i in range(max(map(len, pools))) for pool in pools if i < len(pool)][
        : args.probes
    ]
    torch.set_num_threads(args.threads)
    model, tokenizer = load_model(
        ModelSpec(args.model, args.revision, "float32", args.trust_remote_code, args.device)
    )
    result = diagnose(model, tokenizer, texts, configs, keep=args.keep, probe_tokens=args.probe_tokens,
                      progress=_stopwatch("diagnose"))  # fmt: skip
    paths = write_diagnostics(result, args.out)
    bp = result["base_precision"]
    if bp["flagged"]:
        print(
            f"warning: the base model's weights lie on a {bp['grid_bits']}-bit grid (a dequantized model)"
        )
    print(
        f"suggested plan: keep {', '.join(result['plan']['layer_bits'])} at 8 bits -> {paths['plan']}"
    )
    print(f"wrote {paths['report']}")
    return EXIT_OK


def cmd_run(args, argv: list[str]) -> int:
    from harness.data.suites import load_suite
    from harness.errors import InputError
    from harness.model.load import resolve_device
    from harness.records import ModelSpec, RunSpec
    from harness.run.runner import run

    variants, skipped = _variants(args)  # bad methods or bits fail before anything is loaded
    for line in skipped:
        print(f"qharness: skipping {line}", file=sys.stderr)
    calibration = None
    if any(v.config and v.config.needs_calibration for v in variants):
        from harness.quant.calibration import DEFAULT_SOURCE
        from harness.records import CalibrationSpec

        calibration = CalibrationSpec(args.calibration or DEFAULT_SOURCE, args.calibration_samples,
                                      args.calibration_length, args.seed)  # fmt: skip
    resolve_device(args.device)
    suite = load_suite(args.suite)
    out = args.out or Path("results") / f"{Path(args.model).stem}-{suite.name}"
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file, not a folder")
    spec = RunSpec(
        model=ModelSpec(args.model, args.revision, args.dtype, args.trust_remote_code, args.device),
        suite_path=args.suite, out=out, variants=tuple(variants), limit=args.limit, seed=args.seed,
        threads=args.threads, batch_size=args.batch_size,
        calibration=calibration, skipped=tuple(skipped), adaptive=args.adaptive, policy=args.policy,
        memory_check=not args.no_memory_check, ray=args.ray,
    )  # fmt: skip
    if args.ray is not None:
        if args.adaptive:
            raise InputError("--ray and --adaptive do not combine yet: choose one")
        from harness.run.fanout import require_ray

        require_ray()
    if args.policy is not None and not args.policy.is_file():
        raise InputError(f"policy file not found: {args.policy}")
    store = run(
        spec, overwrite=args.overwrite, progress=not args.no_progress, argv=["qharness", *argv]
    )
    return _gate(store, args)


def _gate(store, args) -> int:
    from harness.analysis.analyse import analyse
    from harness.report.findings import terminal_summary_of

    result = analyse(store, policy_path=args.policy, require=args.require, junit=args.junit,
                     mode=args.gate_mode)  # fmt: skip
    print(terminal_summary_of(store, result))
    print(f"wrote {store.root}/gate.json and {store.root}/report.md")
    return EXIT_OK if result.passed else EXIT_GATE_FAILED


def cmd_suites_validate(args) -> int:
    from harness.data.suites import load_items, load_suite
    from harness.engine.kinds import kind_of

    for path in args.paths:
        suite = load_suite(path)
        n_items = sum(len(load_items(t)) for t in suite.tasks if kind_of(t).itemized)
        slices = sorted({s for t in suite.tasks for s in t.slices})
        print(f"{path}: ok — suite {suite.name!r} v{suite.version}, {len(suite.tasks)} tasks, "
              f"{n_items} items, slices: {', '.join(slices) or 'none'}")  # fmt: skip
    return EXIT_OK


def cmd_gate(args) -> int:
    from harness.run.store import RunStore

    store = RunStore(args.run_dir)
    store.manifest()  # a clear error when there is no run
    return _gate(store, args)


def cmd_plan(args) -> int:
    import dataclasses

    from harness.analysis.sizing import format_plan, plan_from_model, plan_from_run
    from harness.records import ModelSpec

    if args.run_dir is not None:
        powers, policy, source, note = plan_from_run(args.run_dir, args.policy)
    else:
        powers, policy, source, note = plan_from_model(
            args.suite, ModelSpec(args.model), args.policy
        )
    if args.gate_mode:
        policy = dataclasses.replace(policy, mode=args.gate_mode)
    print(format_plan(powers, policy, source, note))
    return EXIT_OK


def cmd_report(args) -> int:
    """Rewrite every report file; the gate is re-applied with the stored target."""
    import json

    from harness.analysis.analyse import TARGET_ANY, analyse
    from harness.run.store import RunStore

    store = RunStore(args.run_dir)
    store.manifest()
    gate_file = store.root / "gate.json"
    target = json.loads(gate_file.read_text()).get("target") if gate_file.exists() else TARGET_ANY
    analyse(store, require=None if target == TARGET_ANY else target)
    print(f"wrote {store.root}/report.md")
    return EXIT_OK


def cmd_compare(args) -> int:
    from harness.analysis.compare import write_comparison

    out = args.out or Path("results") / f"compare-{args.run_a.name}-vs-{args.run_b.name}"
    paths = write_comparison(args.run_a, args.run_b, out, args.pair)
    print(paths["markdown"].read_text(encoding="utf-8"))
    print(f"wrote {paths['markdown']} and {paths['csv']}")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    from harness.errors import InputError

    try:
        if args.command == "run":
            return cmd_run(args, argv)
        if args.command == "gate":
            return cmd_gate(args)
        if args.command == "diagnose":
            return cmd_diagnose(args)
        if args.command == "suites":
            return cmd_suites_validate(args)
        if args.command == "compare":
            return cmd_compare(args)
        if args.command == "plan":
            return cmd_plan(args)
        return cmd_report(args)
    except InputError as exc:
        print(f"qharness: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("qharness: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except OSError as exc:  # disk full, permissions: every stored file is still whole
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"qharness: error: {exc.strerror or exc}{where}; finished parts are kept — fix "
              "this and rerun the same command to resume", file=sys.stderr)  # fmt: skip
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
