"""The generic registry: eager, decorator and lazy ``module:attr`` entries, and
did-you-mean errors."""

from __future__ import annotations

import math

import pytest

from harness.registry import Registry, UnknownName, did_you_mean


def test_entries_eager_decorated_and_lazy():
    registry: Registry = Registry("thing")
    registry.register("pi", 3.14)

    @registry.register("double")
    def double(x):
        return 2 * x

    registry.register("root", "math:sqrt")
    assert registry.get("pi") == 3.14 and registry.get("double")(4) == 8
    assert registry.get("root") is math.sqrt  # imported on first use
    assert registry.names() == ["double", "pi", "root"] and "root" in registry


def test_unknown_names_suggest_the_closest_and_list_the_known():
    registry: Registry = Registry("quantization method")
    registry.register("gptq", 1)
    registry.register("rtn", 2)
    with pytest.raises(UnknownName) as error:
        registry.get("gtpq")
    message = str(error.value)
    assert "unknown quantization method 'gtpq'" in message and "did you mean 'gptq'" in message
    assert "known: gptq, rtn" in message
    assert did_you_mean("zzz", ["gptq"]) == ""
