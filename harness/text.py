"""Text from a suite, an item or a model on its way into a report or an XML file."""

from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # all but tab and newline


def visible(text: object) -> str:
    """``text`` with control characters shown as ``\\xNN`` (XML 1.0 forbids most of them,
    and a terminal or browser would act on them)."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(text))
