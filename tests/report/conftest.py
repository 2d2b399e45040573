"""A stored, gated synthetic run the report tests read."""

from __future__ import annotations

import pytest

from harness.cli import EXIT_OK, main
from tests.synthetic import EFFECTS, SIZES, make_items, manifest, store_run


@pytest.fixture
def run(tmp_path):
    store = store_run(
        tmp_path / "run", make_items(3, EFFECTS, n=60), manifest(SIZES) | {"run_name": "run"}
    )
    assert main(["gate", str(store.root)]) == EXIT_OK
    return store.root
