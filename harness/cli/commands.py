"""What each ``qharness`` command does, given its parsed arguments; returns the exit code."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from harness.cli.parser import EXIT_GATE_FAILED, EXIT_OK


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
    from harness.report import write_analysis
    from harness.report.findings import terminal_summary_of

    analysis = analyse(store, policy_path=args.policy, require=args.require, mode=args.gate_mode)
    write_analysis(store, analysis, junit=args.junit)
    result = analysis.verdict
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
    from harness.store import RunStore

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

    from harness.analysis.analyse import TARGET_ANY, analyse
    from harness.report import write_analysis
    from harness.store import RunStore

    store = RunStore(args.run_dir)
    store.manifest()
    gate_file = store.root / "gate.json"
    target = json.loads(gate_file.read_text()).get("target") if gate_file.exists() else TARGET_ANY
    write_analysis(store, analyse(store, require=None if target == TARGET_ANY else target))
    print(f"wrote {store.root}/report.md")
    return EXIT_OK


def cmd_compare(args) -> int:
    from harness.analysis.compare import write_comparison

    out = args.out or Path("results") / f"compare-{args.run_a.name}-vs-{args.run_b.name}"
    paths = write_comparison(args.run_a, args.run_b, out, args.pair)
    print(paths["markdown"].read_text(encoding="utf-8"))
    print(f"wrote {paths['markdown']} and {paths['csv']}")
    return EXIT_OK
