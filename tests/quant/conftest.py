"""Calibration and probe inputs for the method tests."""

from __future__ import annotations

import pytest
import torch

from harness.quant.calibration import Calibration
from harness.records import CalibrationSpec


@pytest.fixture(scope="module")
def calib():
    torch.manual_seed(5)
    return Calibration(CalibrationSpec("memory"), torch.randint(3, 250, (16, 48)), "sha")


@pytest.fixture(scope="module")
def probe():
    torch.manual_seed(6)
    return torch.randint(3, 250, (4, 40))
