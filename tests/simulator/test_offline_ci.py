"""Confidence intervals of the offline tables (simulator.metrics.offline_ci): a paired bootstrap over held-out
events, checked on examples whose answers are known."""

import math

import numpy as np

from simulator.metrics.offline_ci import event_bootstrap, format_mean, format_rel


def test_identical_variants_differ_by_nothing():
    hits = (np.arange(500) % 3 == 0).astype(float)
    cells = event_bootstrap({"full": hits, "copy": hits.copy()}, "full")
    assert cells["copy"]["rel"] == 0.0 and cells["copy"]["rel_lo"] == cells["copy"]["rel_hi"] == 0.0
    assert not cells["copy"]["significant"] and not cells["full"]["significant"]
    assert cells["full"]["mean"] == hits.mean()


def test_the_interval_of_a_hit_rate_has_the_binomial_width():
    rng = np.random.default_rng(1)
    hits = (rng.random(2000) < 0.3).astype(float)
    cell = event_bootstrap({"a": hits}, "a")["a"]
    assert cell["lo"] < hits.mean() < cell["hi"]
    expected = 2 * 1.96 * math.sqrt(hits.mean() * (1 - hits.mean()) / len(hits))  # normal approximation
    assert abs((cell["hi"] - cell["lo"]) / expected - 1) < 0.15


def test_the_bootstrap_is_paired_over_events():
    """40 of 2,000 events turned from misses into hits: each variant's own interval overlaps the other's, but every
    resample of the same events sees the variant ahead, so the difference is significant."""
    rng = np.random.default_rng(2)
    control = (rng.random(2000) < 0.3).astype(float)
    better = control.copy()
    better[np.flatnonzero(control == 0)[:40]] = 1.0
    cells = event_bootstrap({"control": control, "better": better}, "control", seed=3)
    assert cells["better"]["lo"] < cells["control"]["hi"]  # the marginal intervals overlap
    assert cells["better"]["rel"] == better.mean() / control.mean() - 1
    assert 0 < cells["better"]["rel_lo"] < cells["better"]["rel"] < cells["better"]["rel_hi"]
    assert cells["better"]["significant"]
    assert event_bootstrap({"control": control, "better": better}, "control", seed=3) == cells  # seeded


def test_no_events_and_a_zero_control_give_nan_not_an_error():
    empty = event_bootstrap({"a": np.zeros(0), "b": np.zeros(0)}, "a")
    assert math.isnan(empty["b"]["mean"]) and not empty["b"]["significant"]
    zero = event_bootstrap({"a": np.zeros(10), "b": np.ones(10)}, "a")
    assert math.isnan(zero["b"]["rel"]) and not zero["b"]["significant"] and zero["b"]["mean"] == 1.0


def test_cells_are_formatted_with_their_interval_and_significance():
    assert format_mean({"mean": 0.254, "lo": 0.241, "hi": 0.267}) == "0.2540 [0.2410, 0.2670]"
    assert format_rel({"rel": -0.027, "rel_lo": -0.051, "rel_hi": -0.003, "significant": True}) == "-2.70% [-5.1, -0.3]*"
    assert format_rel({"rel": 0.01, "rel_lo": -0.02, "rel_hi": 0.04, "significant": False}) == "+1.00% [-2.0, +4.0]"
    assert format_rel({"rel": float("nan"), "rel_lo": 0, "rel_hi": 0, "significant": False}) == "n/a"


def test_with_several_seeds_the_interval_covers_the_seeds_too():
    """Two seeds whose hit rates differ (0.2 and 0.4 on 4,000 events each): the point is their mean, and the
    interval, drawing seeds as well as events, spans most of the gap; one seed's events alone give a narrow one."""
    rng = np.random.default_rng(4)
    low, high = (rng.random(4000) < 0.2).astype(float), (rng.random(4000) < 0.4).astype(float)
    pooled = event_bootstrap({"a": [low, high]}, "a")["a"]
    assert pooled["mean"] == (low.mean() + high.mean()) / 2
    assert pooled["lo"] < 0.22 and pooled["hi"] > 0.38  # a seed drawn twice is a possible world
    single = event_bootstrap({"a": [low]}, "a")["a"]
    assert single == event_bootstrap({"a": low}, "a")["a"] and single["hi"] - single["lo"] < 0.03


def test_the_slope_interval_comes_from_each_windows_replicates():
    """Three windows whose hit rates fall 0.5, 0.4, 0.3 on 3,000 events each: the slope is -0.1 per window and its
    interval excludes 0; flat windows give an interval around 0."""
    from simulator.metrics.offline_ci import slope_intervals

    rng = np.random.default_rng(5)
    falling, flat = [], []
    for p in (0.5, 0.4, 0.3):
        event_bootstrap({"a": (rng.random(3000) < p).astype(float)}, "a", replicates=falling)
        event_bootstrap({"a": (rng.random(3000) < 0.4).astype(float)}, "a", replicates=flat)
    down = slope_intervals(np.array([1, 2, 3]), falling, ["a"])["a"]
    assert down["slope_hi"] < 0 and down["slope_lo"] < -0.08 < down["slope_hi"] + 0.04 and down["slope_sig"]
    level = slope_intervals(np.array([1, 2, 3]), flat, ["a"])["a"]
    assert level["slope_lo"] < 0 < level["slope_hi"] and not level["slope_sig"]
    assert not slope_intervals(np.array([1]), falling[:1], ["a"])["a"]["slope_sig"]  # one window: no slope
