"""Gate policies: parsing and the errors a bad one gets."""

from __future__ import annotations

import pytest

from harness.analysis.policy import parse_policy
from harness.errors import InputError


@pytest.mark.parametrize(
    "raw,message",
    [
        (
            {"rules": [{"kind": "max_dorp", "tolerance": 0.1}]},
            "unknown rule kind 'max_dorp'; did you mean 'max_drop'",
        ),
        ({"rules": [{"kind": "max_drop"}]}, "'tolerance' must be a number"),
        (
            {"rules": [{"kind": "max_drop", "tolerance": 0.1, "slice": ["a"]}]},
            "unknown key 'slice'; did you mean 'slices'",
        ),
        (
            {"rules": [{"kind": "max_drop", "tolerance": 0.1, "slices": [1]}]},
            "'slices' must be a list",
        ),
        ({"alpha": 2}, "'alpha' must be between 0 and 1"),
        ({"rulez": []}, "unknown gate key 'rulez'; did you mean 'rules'"),
    ],
)
def test_bad_policies_are_clear_errors(raw, message):
    with pytest.raises(InputError, match=message):
        parse_policy(raw, "policy.yaml")
