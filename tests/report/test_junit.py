"""The gate's verdict as JUnit XML."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from harness.report.junit import write_junit
from tests.synthetic import gate, make_items


def test_junit_has_one_case_per_variant_and_rule(tmp_path):
    items = make_items(
        13,
        {"w8": {"noise": 0.01}, "w2": {"drop": {"general": 0.8, "arithmetic": 0.8, "rare": 0.8}}},
    )
    result = gate(items, ["w8", "w2"])
    path = write_junit(result, tmp_path / "gate.xml")
    suite = ET.parse(path).getroot().find("testsuite")
    cases = suite.findall("testcase")
    pairs = {(f.variant, f.rule) for f in result.findings}
    assert len(cases) == len(pairs) == int(suite.get("tests"))
    failing = [c for c in cases if c.find("failure") is not None]
    assert len(failing) == int(suite.get("failures")) > 0
    assert all(c.get("classname") == "qharness.w2" for c in failing)
