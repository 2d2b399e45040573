"""The argument parser: bit widths, group sizes and bad arguments (exit 2)."""

from __future__ import annotations

import argparse

import pytest

from harness.cli import EXIT_USAGE, build_parser
from harness.cli.parser import _bits, _group_size


def test_bits_and_group_sizes_parse_or_explain():
    assert _bits("8,4, 3,2") == [8, 4, 3, 2]
    assert _group_size("channel") is None and _group_size("0") is None and _group_size("64") == 64
    for bad, parse in (("4,x", _bits), ("", _bits), ("-5", _group_size), ("x", _group_size)):
        with pytest.raises(argparse.ArgumentTypeError):
            parse(bad)


def test_run_defaults_and_bad_arguments_exit_2(capsys):
    args = build_parser().parse_args(["run"])
    assert args.model == "default" and args.dtype == "float32" and not args.trust_remote_code
    assert str(args.suite) == "tasks/default.yaml" and args.batch_size == 8 and args.kv_bits is None
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["run", "--bits", "four"])
    assert exit_.value.code == EXIT_USAGE and "comma-separated integers" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["gate"])  # RUN is required
    assert exit_.value.code == EXIT_USAGE
