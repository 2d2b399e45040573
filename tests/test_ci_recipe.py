"""The README's CI recipes: both run the same commands, and those commands work — a fresh
sweep, then the gate on the stored results — leaving a JUnit file and the comment body."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

from tests.conftest import REPO


def recipe_blocks() -> list[str]:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("### A CI recipe", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```yaml\n(.*?)```", section, flags=re.S)


def gate_script(block: str) -> str:
    """The ``if [ -f ... ] ... fi`` shell block of a recipe, dedented."""
    lines = block.splitlines()
    start = next(i for i, line in enumerate(lines) if "if [ -f" in line)
    end = next(i for i in range(start, len(lines)) if lines[i].strip() == "fi")
    return textwrap.dedent("\n".join(lines[start : end + 1]))


def test_both_recipes_run_the_same_commands_and_they_work(tiny_model_dir, tiny_suite, tmp_path):
    github, gitlab = recipe_blocks()
    script = gate_script(github)
    assert script == gate_script(gitlab)
    run = tmp_path / "results" / "pr"
    env = {**os.environ, "MODEL": str(tiny_model_dir), "SUITE": str(tiny_suite), "RUN": str(run),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}  # fmt: skip
    for step in ("fresh sweep", "stored results"):
        done = subprocess.run(["bash", "-c", script + "\necho code=$?"], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=600)  # fmt: skip
        code = int(done.stdout.strip().splitlines()[-1].removeprefix("code="))
        assert code in (0, 1), (step, done.stderr[-2000:])
        ET.parse(run / "gate.xml")  # the JUnit file the job publishes
        body = (run / "report.md").read_text(encoding="utf-8")  # the comment it posts
        assert body.startswith("# qharness report") and "(safety mode:" in body
        assert len(body.splitlines()) < 60
