"""Creator dynamics: the upload multiplier from received vs reference feedback, and the day's upload plan."""

import numpy as np
import pytest

from simulator.config import WorldConfig
from simulator.creators import CreatorDynamics

CREATORS = np.array([10, 20, 30, 40])


def _dyn(elasticity=0.5, max_mult=3.0, rate=(1.0, 1.0, 1.0, 1.0), days=10, window=3):
    ref = np.zeros((4, days))
    ref[2, :] = 5.0  # creator 30: 15 interactions over any 3-day window in the log
    ref[3, :] = 1.0  # creator 40: 3 over 3 days
    cfg = WorldConfig(creator_elasticity=elasticity, max_upload_multiplier=max_mult, feedback_window_days=window)
    return CreatorDynamics(CREATORS, ref, np.array(rate, float), cfg, days)


def test_elasticity_zero_is_pure_replay():
    d = _dyn(elasticity=0.0)
    d.observe(0, np.array([10] * 50), np.ones(50))
    for day in range(4):
        np.testing.assert_array_equal(d.multiplier(day), np.ones(4))
        keep, extra = d.plan(day, np.repeat(CREATORS, 25), np.random.default_rng(day))
        assert keep.all() and len(keep) == 100
        np.testing.assert_array_equal(extra, np.zeros(4))


def test_multiplier_hand_computed():
    d = _dyn(elasticity=0.5, max_mult=3.0)
    np.testing.assert_array_equal(d.multiplier(0), np.ones(4))  # day 0: nothing to react to yet
    # day 0 feedback: creator 10 gets 3 interactions (aligned arrays, repeated creators add up)
    d.observe(0, np.array([10, 10, 20]), np.array([2.0, 1.0, 0.0]))
    np.testing.assert_allclose(d.multiplier(1), [
        np.sqrt((1 + 3) / (1 + 0)),  # more feedback than the log: 2 > 1
        1.0,  # nothing received, nothing in the log
        np.sqrt(1 / (1 + 5)),  # silence vs 5 in the log (day 1's window holds day 0 only): 0.41
        np.sqrt(1 / (1 + 1)),  # silence vs 1: 0.71
    ])
    # day 3: window days 0..2 -> reference 15 and 3
    np.testing.assert_allclose(d.multiplier(3), [2.0, 1.0, 1 / 3, 0.5])  # sqrt(1/16) = 0.25 clipped at 1/3
    # day 4: day 0 has left the 3-day window
    np.testing.assert_allclose(d.multiplier(4), [1.0, 1.0, 1 / 3, 0.5])


def test_multiplier_clipped_at_max():
    d = _dyn(elasticity=1.0, max_mult=3.0)
    d.observe(0, np.array([10]), np.array([100.0]))
    assert d.multiplier(1)[0] == pytest.approx(3.0)


def test_plan_adds_uploads_for_rewarded_creators_and_drops_for_silent_ones():
    d = _dyn(elasticity=0.5, rate=(50.0, 50.0, 50.0, 50.0))
    d.observe(0, np.array([10]), np.array([3.0]))  # creator 10 -> m = 2 on days 1..3
    replay = np.repeat(CREATORS, 3000)
    keep, extra = d.plan(3, replay, np.random.default_rng(0))
    # m = [2, 1, 1/3, 1/2]: rewarded and neutral creators keep everything
    assert keep[replay == 10].all() and keep[replay == 20].all()
    assert keep[replay == 30].mean() == pytest.approx(1 / 3, abs=0.03)
    assert keep[replay == 40].mean() == pytest.approx(1 / 2, abs=0.03)
    # extra uploads only where m > 1: Poisson((2 - 1) * 50)
    assert extra[1:].sum() == 0
    assert 25 <= extra[0] <= 80


def test_state_round_trip():
    d = _dyn()
    d.observe(0, np.array([10]), np.array([3.0]))
    e = _dyn()
    e.load_state(d.state())
    np.testing.assert_array_equal(e.multiplier(1), d.multiplier(1))
    st = d.state()
    st["received"][:] = 0  # a copy: mutating it does not change the dynamics
    assert d.multiplier(1)[0] == pytest.approx(2.0)


def test_unknown_creator_raises():
    d = _dyn()
    with pytest.raises(KeyError, match="creator"):
        d.observe(0, np.array([999]), np.array([1.0]))
