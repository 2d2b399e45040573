"""The ``qharness`` command line. Exit codes: 0 pass, 1 gate failed, 2 usage or input error."""

from __future__ import annotations

import sys

from harness.cli.commands import (
    cmd_compare,
    cmd_diagnose,
    cmd_gate,
    cmd_plan,
    cmd_report,
    cmd_run,
    cmd_suites_validate,
)
from harness.cli.parser import EXIT_GATE_FAILED, EXIT_OK, EXIT_USAGE, build_parser

__all__ = ["EXIT_GATE_FAILED", "EXIT_OK", "EXIT_USAGE", "build_parser", "main"]


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
