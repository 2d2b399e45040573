"""The plots' geometry."""

from __future__ import annotations

from harness.report.plots import pareto_front


def test_pareto_front_keeps_only_undominated_points():
    sizes = [100, 60, 50, 30, 30, 20]
    quality = [100, 99, 90, 95, 80, 10]
    assert pareto_front(sizes, quality) == [5, 3, 1, 0]
