"""What ties a run folder to the inputs of its numbers: the scoring code, the libraries
that compute them, and the suite's files. A resumed run appends rows only while all of
these are unchanged (see :meth:`harness.store.RunStore.open`)."""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import platform
from pathlib import Path

import harness
from harness.records import Suite

# presentation only: the stored rows do not depend on it
_NOT_SCORING = ("report",)
# libraries whose versions can change a stored number (and the method libraries)
LIBRARIES = ("torch", "transformers", "safetensors", "gguf", "numpy", "pandas", "lm-eval",
             "hqq", "bitsandbytes", "torchao")  # fmt: skip


def _normalised(source: str) -> str:
    """The module's syntax tree without docstrings: comments, formatting and prose do not
    change it; any change to code or to a default value does."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(body, list)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree, include_attributes=False)


def code_fingerprint(root: Path | None = None) -> str:
    """A hash of every module of the package that can change a stored row (all but the
    report renderers), taken over syntax trees, plus the versions of the libraries that
    compute the numbers."""
    root = root or Path(harness.__file__).parent
    digest = hashlib.sha256(harness.__version__.encode())
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root)
        if relative.parts[0] in _NOT_SCORING:
            continue
        digest.update(relative.as_posix().encode())
        digest.update(_normalised(path.read_text(encoding="utf-8")).encode())
    for name, version in library_versions().items():
        digest.update(f"{name}={version}".encode())
    return digest.hexdigest()[:16]


def suite_fingerprint(suite: Suite) -> str:
    digest = hashlib.sha256(Path(suite.path).read_bytes())
    for task in suite.tasks:
        source = Path(task.source) if task.source and Path(task.source).is_file() else None
        for path in filter(None, (task.data, task.fewshot_data, source)):
            digest.update(Path(path).read_bytes())
    return digest.hexdigest()[:16]


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions
