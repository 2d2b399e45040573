"""The one reader of YAML files users hand the harness (suites, variants, policies): safe
loading only, and every problem one line naming the file — missing, not UTF-8, not YAML
(with the line), nested too deeply, too big once its aliases are expanded (an "alias
bomb" of a few lines that means billions of nodes), or text no file can hold (an
unpaired surrogate escape)."""

from __future__ import annotations

from pathlib import Path

import yaml

from harness.errors import InputError

MAX_BYTES = 16 * 2**20
MAX_NODES = 200_000  # after expanding aliases; the default suite has ~400
MAX_DEPTH = 64


def read_yaml(path: str | Path, what: str) -> object:
    """The document in ``path`` as plain Python data (``None`` for an empty file)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} file not found: {path}")
    if path.stat().st_size > MAX_BYTES:
        raise InputError(f"{path}: {path.stat().st_size} bytes is too big for a {what} file")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    loader = None
    try:
        loader = yaml.SafeLoader(text)  # (its reader already refuses control characters)
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node, path, 0, {})
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise InputError(
            f"{path}{where}: not valid YAML ({getattr(exc, 'problem', None) or exc})"
        ) from None
    except RecursionError:
        raise InputError(f"{path}: nested too deeply") from None
    except (ValueError, OverflowError) as exc:  # e.g. a timestamp that is no date
        raise InputError(f"{path}: not valid YAML ({exc})") from None
    finally:
        if loader is not None:
            loader.dispose()


def _paired(text: str, where: str) -> str:
    """``text`` with JSON-style surrogate escape pairs (``"\\ud83d\\ude00"``, which YAML
    keeps as two halves) joined into their character; an unpaired half is an error."""
    if not any("\ud800" <= c <= "\udfff" for c in text):
        return text
    try:
        return text.encode("utf-16", "surrogatepass").decode("utf-16")
    except UnicodeDecodeError:
        raise InputError(
            f"{where}: not valid Unicode text (an unpaired surrogate escape)"
        ) from None


def _expanded_size(node: yaml.Node, path: Path, depth: int, sizes: dict[int, int]) -> int:
    """The number of nodes once every alias is expanded (each shared node counted once
    per use, computed once)."""
    if id(node) in sizes:
        return sizes[id(node)]
    if depth > MAX_DEPTH:
        raise InputError(f"{path}: nested more than {MAX_DEPTH} levels deep")
    size = 1
    if isinstance(node, yaml.ScalarNode) and isinstance(node.value, str):
        node.value = _paired(node.value, f"{path}:{node.start_mark.line + 1}")
    if isinstance(node, yaml.SequenceNode):
        size += sum(_expanded_size(child, path, depth + 1, sizes) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            size += _expanded_size(key, path, depth + 1, sizes)
            size += _expanded_size(value, path, depth + 1, sizes)
    if size > MAX_NODES:
        raise InputError(f"{path}: more than {MAX_NODES} values once its aliases are expanded "
                         "(an alias bomb?)")  # fmt: skip
    sizes[id(node)] = size
    return size
