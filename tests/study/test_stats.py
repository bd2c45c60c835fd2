"""Statistics, search points, performance profiles and best-trial selection."""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from steplab.study.profiles import performance_profiles
from steplab.study.protocol import select_best, selection_metric
from steplab.study.search_grid import (
    edge_warning,
    log_grid,
    lr_center,
    scrambled_halton,
    search_points,
)
from steplab.study.stats import (
    loss_auc,
    mean_ci,
    steps_to_target,
    t_quantile,
)

# Student's t 0.975 quantiles from printed tables (e.g. NIST/SEMATECH e-Handbook, 1.4.7.2)
T_TABLE = {1: 12.706, 2: 4.303, 4: 2.776, 9: 2.262, 29: 2.045}


@pytest.mark.parametrize(("df", "value"), sorted(T_TABLE.items()))
def test_t_quantile_matches_the_printed_table(df: int, value: float) -> None:
    assert t_quantile(0.975, df) == pytest.approx(value, abs=1e-3)
    assert t_quantile(0.025, df) == pytest.approx(-value, abs=1e-3)


def test_mean_ci_is_the_t_interval() -> None:
    xs = [0.80, 0.82, 0.84]
    ci = mean_ci(xs)
    half = 4.303 * np.std(xs, ddof=1) / math.sqrt(3)
    assert ci.mean == pytest.approx(0.82)
    assert (ci.low, ci.high) == pytest.approx((0.82 - half, 0.82 + half), abs=1e-4)


def test_mean_ci_drops_non_finite_values_and_handles_tiny_samples() -> None:
    assert mean_ci([1.0, math.nan, math.inf]).n == 1
    one = mean_ci([2.0])
    assert one.low == one.high == 2.0
    assert math.isnan(mean_ci([]).mean)


def test_the_unpaired_percentile_bootstrap_is_gone() -> None:
    """Audit items 1-2: its 3-seed "95% CI" was a 90% test and ignored the pairing."""
    import steplab.study.stats as stats_module

    assert not hasattr(stats_module, "bootstrap_diff_ci")
    assert not hasattr(stats_module, "relative_diff_ci")


def test_steps_to_target_finds_the_first_evaluation_meeting_it() -> None:
    rows = [
        {"step": 10, "wall_time": 0.1, "train_loss": 1.0},
        {"step": 20, "wall_time": 0.2, "val_loss": 0.5},
        {"step": 30, "wall_time": 0.3, "val_loss": 0.2},
        {"step": 40, "wall_time": 0.4, "val_loss": 0.1},
    ]
    assert steps_to_target(rows, "val_loss", 0.25, "min") == (30, 0.3)
    assert steps_to_target(rows, "val_loss", 0.01, "min") is None


def test_loss_auc_is_the_mean_loss_and_infinite_for_diverged_runs() -> None:
    assert loss_auc([0, 1, 2], [1.0, 1.0, 1.0]) == pytest.approx(1.0)
    assert loss_auc([0, 10], [2.0, 0.0]) == pytest.approx(1.0)
    assert loss_auc([0, 10], [2.0, math.nan]) == math.inf


def test_log_grid_spans_the_range_geometrically() -> None:
    grid = log_grid(1e-4, 1e-2, 5)
    assert grid[0] == pytest.approx(1e-4) and grid[-1] == pytest.approx(1e-2)
    ratios = np.diff(np.log(grid))
    assert np.allclose(ratios, ratios[0])


def test_scrambled_halton_is_deterministic_and_stratified() -> None:
    pts = np.array(scrambled_halton(64, 2, seed=3))
    assert np.array_equal(pts, np.array(scrambled_halton(64, 2, seed=3)))
    assert not np.array_equal(pts, np.array(scrambled_halton(64, 2, seed=4)))
    # base 2, first dimension: 64 = 2^6 points put exactly one point in each 1/64 bin
    bins = np.floor(pts[:, 0] * 64).astype(int)
    assert sorted(bins) == list(range(64))


def test_search_points_use_halton_only_when_the_budget_allows_other_hyperparameters() -> None:
    space = {"lr": (1e-5, 1e-1, "log", 1), "beta1": (0.8, 0.99, "linear", 10)}
    small = search_points(1e-3, 10.0, 5, space)
    assert all(set(p) == {"lr"} for p in small)
    big = search_points(1e-3, 10.0, 12, space)
    assert all(set(p) == {"lr", "beta1"} for p in big)
    assert all(1e-4 <= p["lr"] <= 1e-2 and 0.8 <= p["beta1"] <= 0.99 for p in big)
    assert lr_center("adam", {}) == 1e-3 and lr_center("sgd", {"lr": 0.3}) == 0.3


def test_edge_warning_names_the_edge() -> None:
    assert "lower edge" in (edge_warning([1e-3, 1e-2, 1e-1], 1e-3) or "")
    assert edge_warning([1e-3, 1e-2, 1e-1], 1e-2) is None


def test_select_best_uses_validation_and_never_picks_a_diverged_run() -> None:
    runs = [
        (
            {"lr": 0.01},
            {"status": "completed", "metrics": {"val_accuracy": 0.7, "test_accuracy": 0.99}},
        ),
        (
            {"lr": 0.1},
            {"status": "completed", "metrics": {"val_accuracy": 0.8, "test_accuracy": 0.5}},
        ),
        ({"lr": 1.0}, {"status": "diverged", "metrics": {"val_accuracy": 0.95}}),
    ]
    index, warning = select_best(runs, selection_metric("test_accuracy"), "max")
    assert index == 1 and warning is None
    assert select_best([runs[2]], "val_accuracy", "max") == (None, None)


def test_performance_profile_of_the_fastest_everywhere_is_one() -> None:
    times = {"a": {"t1": 10.0, "t2": 20.0}, "b": {"t1": 30.0, "t2": math.inf}}
    prof = performance_profiles(times)
    assert prof.scores["a"] == pytest.approx(1.0)
    assert prof.ratios["b"] == {"t1": pytest.approx(3.0), "t2": math.inf}
    assert prof.rho["b"][-1] == pytest.approx(0.5)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.floats(1.0, 1e4), min_size=3, max_size=3), min_size=2, max_size=4))
def test_performance_profiles_are_monotone_fractions(values: list[list[float]]) -> None:
    times = {f"opt{i}": {f"t{j}": v for j, v in enumerate(row)} for i, row in enumerate(values)}
    prof = performance_profiles(times)
    for rho in prof.rho.values():
        assert all(0.0 <= r <= 1.0 for r in rho)
        assert all(b >= a for a, b in itertools.pairwise(rho))
    assert max(prof.scores.values()) <= 1.0 + 1e-9
    assert all(s >= 0.0 for s in prof.scores.values())


def _run(step_hit: int | None, final: float) -> tuple[dict[str, Any], dict[str, Any], list[Any]]:
    rows = [
        {"step": s, "val_accuracy": (0.9 if step_hit is not None and s >= step_hit else 0.5)}
        for s in (50, 100, 150, 200)
    ]
    rows[-1]["val_accuracy"] = final
    summary = {"status": "completed", "metrics": {"val_accuracy": final}}
    return {"lr": 0.1}, summary, rows


def test_selection_criterion_is_selectable_and_never_reads_test() -> None:
    runs = [_run(150, 0.95), _run(50, 0.91), _run(None, 0.97)]
    configs = [(c, s) for c, s, _ in runs]
    rows = [r for _, _, r in runs]
    pick = {
        criterion: select_best(configs, "val_accuracy", "max", criterion=criterion, rows=rows,
                               target=0.8)[0]
        for criterion in ("final", "steps_to_target", "auc")
    }
    assert pick == {"final": 2, "steps_to_target": 1, "auc": 1}


def test_tuning_repeats_search_at_their_own_seeds_and_feed_final_seeds_in_turn() -> None:
    from steplab.study.protocol import Group, search_configs, seed_configs
    from steplab.study.spec import StudySpec

    spec = StudySpec(tasks=("mnist1d-logreg",), optimizers=("adam",), budget=2,
                     tuning_repeats=3, seeds=5, trajectories=())
    configs = search_configs(spec, Group("mnist1d-logreg", "adam"))
    assert [c["seed"] for c in configs] == [0, 0, 1, 1, 2, 2]
    best = [{"lr": 0.1, "seed": 0}, None, {"lr": 0.3, "seed": 2}]
    finals = seed_configs(best, 5)
    # seed i uses the best of search i mod 3; a failed search gives no run for its seeds
    assert [(c["seed"], c["lr"]) for c in finals] == [
        (1000, 0.1), (1002, 0.3), (1003, 0.1)
    ]
