"""Text on its way into a report: control characters shown, everything else kept."""

from __future__ import annotations

from harness.text import visible


def test_control_characters_are_shown_as_escapes_tabs_and_newlines_kept():
    assert visible("a\x00b\x1bc\x7f\x9fd") == "a\\x00b\\x1bc\\x7f\\x9fd"
    assert visible("line\n\tindented") == "line\n\tindented"
    assert visible("<script>é</script>") == "<script>é</script>"  # escaping is the writers' job
    assert visible(42) == "42"
