"""The gate's verdict as JUnit XML, for CI systems that show test results."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from harness.records import Verdict
from harness.text import visible


def write_junit(result: Verdict, path: Path) -> Path:
    """One test case per variant x rule; failing findings become <failure>, warnings
    go to <system-out>."""
    suite = ET.Element("testsuite", name="qharness-gate")
    cases = failures = 0
    for v in result.variants:
        for rule in dict.fromkeys(f.rule for f in result.findings if f.variant == v.variant):
            mine = [f for f in result.findings if f.variant == v.variant and f.rule == rule]
            case = ET.SubElement(suite, "testcase", classname=visible(f"qharness.{v.variant}"),
                                 name=visible(rule))  # fmt: skip
            cases += 1
            failed = [f for f in mine if f.severity == "fail"]
            if failed:
                failures += 1
                node = ET.SubElement(case, "failure", message=visible(failed[0].message))
                node.text = visible("\n".join(f.message for f in failed))
            warned = [f.message for f in mine if f.severity == "warn"]
            if warned:
                ET.SubElement(case, "system-out").text = visible("\n".join(warned))
    suite.set("tests", str(cases))
    suite.set("failures", str(failures))
    suite.set("errors", "0")
    root = ET.Element("testsuites")
    root.append(suite)
    ET.indent(root)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
    return Path(path)
