"""The verdicts' levels hold by simulation: false positives <= alpha, coverage >= 1 - alpha.

Audit item 1 (a "95% CI" that was a ~90% test at 3 seeds) is caught here: every
null cell's false-positive rate must stay within a binomial tolerance of 5%.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from steplab.study.verdicts.calibration import CELLS, calibration_table

REPS, ALPHA = 4000, 0.05
TOL = 3.0 * math.sqrt(ALPHA * (1 - ALPHA) / REPS)  # three binomial standard errors


@pytest.fixture(scope="module")
def table() -> list[dict[str, Any]]:
    return calibration_table(reps=REPS, alpha=ALPHA)


def test_every_cell_is_simulated(table: list[dict[str, Any]]) -> None:
    assert len(table) == len(CELLS) == 24
    assert {r["n"] for r in table} == {3, 5, 10}
    assert {r["noise"] for r in table} == {"normal", "skewed"}


@pytest.mark.parametrize("quantity", ["final", "steps_to_target"])
def test_false_positive_rate_is_at_most_nominal(
    table: list[dict[str, Any]], quantity: str
) -> None:
    nulls = [r for r in table if r["quantity"] == quantity and r["effect"] == 0.0]
    assert len(nulls) == 6
    for row in nulls:
        assert row["false_positive_rate"] <= ALPHA + TOL, row


@pytest.mark.parametrize("quantity", ["final", "steps_to_target"])
def test_coverage_is_at_least_nominal_under_null_and_shift(
    table: list[dict[str, Any]], quantity: str
) -> None:
    for row in (r for r in table if r["quantity"] == quantity):
        assert row["coverage"] >= 1 - ALPHA - TOL, row


def test_equivalence_is_rarely_claimed_when_the_effect_is_on_the_margin(
    table: list[dict[str, Any]],
) -> None:
    for row in (r for r in table if r["quantity"] == "final"):
        assert row["false_equivalence_rate"] <= ALPHA + TOL, row


def test_the_tests_have_power_at_ten_pairs(table: list[dict[str, Any]]) -> None:
    """Calibrated is not the same as useless: 10 pairs detect a 30% speed-up most of the time."""
    shifted = [r for r in table if r["n"] == 10 and r["effect"] != 0.0]
    assert all(r["power"] > 0.45 for r in shifted), shifted


def test_time_analysis_sees_censoring(table: list[dict[str, Any]]) -> None:
    times = [r for r in table if r["quantity"] == "steps_to_target"]
    assert all(0.1 < r["censored_fraction"] < 0.3 for r in times)
