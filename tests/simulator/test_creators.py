"""Creator dynamics: satisfaction with memory against the creator's baseline, the upload plan, churn and return,
followers, and the calibration of the defaults (step response half-life, saturation, DAC per feedback)."""

import numpy as np
import pytest
from pydantic import ValidationError

from simulator.core.config import WorldConfig
from simulator.world.creators import CreatorDynamics, CreatorReference, baseline, daily_feedback, decay

CREATORS = np.array([10, 20, 30, 40])


def _ref(expo, inter, rate=None, ids=None) -> CreatorReference:
    expo, inter = np.atleast_2d(np.asarray(expo, float)), np.atleast_2d(np.asarray(inter, float))
    ids = CREATORS[: len(expo)] if ids is None else ids
    rate = np.ones(len(ids)) if rate is None else np.asarray(rate, float)
    return CreatorReference(creator_ids=ids, exposures=expo, interactions=inter, upload_rate=rate, pre_period=True)


def _population(n, x, y, ref_days=14, rate=0.35):
    """n creators whose every reference day had x exposures and y interactions."""
    ids = np.arange(n) + 100
    return _ref(np.full((n, ref_days), x), np.full((n, ref_days), y), np.full(n, rate), ids), ids


def _feed(d: CreatorDynamics, day: int, ids: np.ndarray, x, y) -> None:
    d.observe(day, ids, np.broadcast_to(x, ids.shape), np.broadcast_to(y, ids.shape))


def test_daily_feedback_and_baseline_hand_computed():
    cfg = WorldConfig(satisfaction_halflife_days=1.0, satisfaction_expo_weight=0.5, satisfaction_inter_weight=2.0)
    assert decay(cfg) == 0.5
    np.testing.assert_allclose(daily_feedback(np.array([0.0, 3.0]), np.array([1.0, 0.0]), cfg),
                               [2 * np.log(2), 0.5 * np.log(4)])
    # two reference days, r = [r0, r1]: B = (0.5 r0 + r1) / 1.5 (the bias-corrected EWMA at their end)
    ref = _ref([[3.0, 0.0]], [[0.0, 1.0]])
    r0, r1 = 0.5 * np.log(4), 2 * np.log(2)
    np.testing.assert_allclose(baseline(ref, cfg), [(0.5 * r0 + r1) / 1.5])
    assert baseline(_ref(np.zeros((1, 0)), np.zeros((1, 0))), cfg)[0] == 0.0  # no reference days


def test_elasticity_zero_is_pure_replay():
    ref, ids = _population(50, 40.0, 4.0)
    d = CreatorDynamics(ref, WorldConfig(creator_elasticity=0.0, churn_prob=1.0), days=10)
    replay = np.repeat(ids, 3)
    for day in range(10):  # silence: no feedback at all, which would churn everybody with elasticity > 0
        np.testing.assert_array_equal(d.multiplier(day), np.ones(50))
        keep, extra = d.plan(day, replay, np.random.default_rng(day))
        assert keep.all() and len(keep) == 150
        np.testing.assert_array_equal(extra, np.zeros(50))
    assert d.active.all()


def test_multiplier_hand_computed():
    cfg = WorldConfig(creator_elasticity=0.5, max_upload_multiplier=3.0, satisfaction_halflife_days=2.0)
    lam, eps = decay(cfg), cfg.satisfaction_prior
    ref = _ref(np.full((4, 3), [[10.0], [0.0], [5.0], [200.0]]), np.full((4, 3), [[1.0], [0.0], [0.0], [20.0]]))
    d = CreatorDynamics(ref, cfg, days=5)
    B = daily_feedback(ref.exposures[:, 0], ref.interactions[:, 0], cfg)  # constant reference days: B = r
    np.testing.assert_allclose(d.baseline, B)
    np.testing.assert_array_equal(d.multiplier(0), np.ones(4))  # day 0: satisfaction starts at the baseline
    # day 0 feedback (aligned arrays, repeated creators add up): 10 gets 3x its exposures, 20 some, 30 and 40 nothing
    d.observe(0, np.array([10, 10, 20]), np.array([20.0, 10.0, 4.0]), np.array([2.0, 1.0, 1.0]))
    r = daily_feedback(np.array([30.0, 4.0, 0.0, 0.0]), np.array([3.0, 1.0, 0.0, 0.0]), cfg)
    S = lam * B + (1 - lam) * r
    m = np.clip(((S + eps) / (B + eps)) ** 0.5, 1 / 3, 3)
    np.testing.assert_allclose(d.multiplier(1), m)
    assert m[0] > 1 and m[1] > 1 and m[2] < 1 and m[3] < 1
    # a day of silence: the memory fades by lam again
    np.testing.assert_allclose(d.multiplier(2), np.clip(((lam * S + eps) / (B + eps)) ** 0.5, 1 / 3, 3))
    # feedback of a day already in the satisfaction cannot arrive any more
    with pytest.raises(ValueError, match="already"):
        d.observe(1, np.array([10]), np.array([1.0]), np.array([0.0]))


def test_multiplier_clipped_at_max():
    d = CreatorDynamics(_ref([[0.0]], [[0.0]]), WorldConfig(creator_elasticity=1.0, max_upload_multiplier=1.5,
                                                            satisfaction_halflife_days=0.1), days=3)
    d.observe(0, np.array([10]), np.array([1000.0]), np.array([100.0]))
    assert d.multiplier(1)[0] == pytest.approx(1.5)


def test_plan_adds_uploads_for_rewarded_creators_and_drops_for_silent_ones():
    cfg = WorldConfig(satisfaction_halflife_days=1.0, churn_prob=0.0)
    ref = _ref(np.full((4, 2), 20.0), np.full((4, 2), 2.0), rate=np.full(4, 50.0))
    d = CreatorDynamics(ref, cfg, days=5)
    d.observe(0, CREATORS, np.array([2000.0, 20.0, 0.0, 0.0]), np.array([200.0, 2.0, 0.0, 0.0]))
    m = d.multiplier(1)
    assert m[0] > 1.3 and m[1] == pytest.approx(1.0) and m[2] < 0.9 and m[2] == m[3]
    replay = np.repeat(CREATORS, 3000)
    keep, extra = d.plan(1, replay, np.random.default_rng(0))
    assert keep[replay == 10].all() and keep[replay == 20].all()
    assert keep[replay == 30].mean() == pytest.approx(m[2], abs=0.03)
    # extra uploads only where m > 1: Poisson((m - 1) * 50)
    assert extra[1:].sum() == 0
    assert extra[0] == pytest.approx((m[0] - 1) * 50, abs=5 * np.sqrt((m[0] - 1) * 50))


@pytest.mark.parametrize("halflife", [7.0, 3.0])
def test_step_response_is_gradual_with_the_configured_half_life(halflife):
    """Creators at their baseline feedback, then +20% exposures and interactions from day 5 on: the expected upload
    rate does not move on day 5, then rises monotonically and reaches half its new level after ~ the half-life."""
    cfg = WorldConfig(satisfaction_halflife_days=halflife)
    ref, ids = _population(200, 37.0, 2.0)  # the synthetic platform's median creator-day (docs/world.md)
    days, step = 80, 5
    d = CreatorDynamics(ref, cfg, days=days)
    rate = []
    for day in range(days):
        keep, _ = d.plan(day, ids, np.random.default_rng(day))
        rate.append(d.expected_uploads(day).sum())
        f = 1.2 if day >= step else 1.0
        _feed(d, day, ids, 37.0 * f, 2.0 * f)
    rate = np.array(rate)
    base, new = rate[0], rate[-1]
    np.testing.assert_allclose(rate[: step + 1], base)  # no jump on the step day: its uploads precede its feedback
    assert d.active.all()  # above baseline: nobody churns
    rise = (rate[step:] - base) / (new - base)
    assert (np.diff(rise) >= -1e-12).all() and rise[-1] == pytest.approx(1.0, abs=1e-3)
    assert rise[1] < 0.25  # gradual: one day of better feedback moves uploads by a fraction of the way
    k = int(np.argmax(rise >= 0.5))  # first day at or past half; interpolate between days k-1 and k
    measured = k - 1 + (0.5 - rise[k - 1]) / (rise[k] - rise[k - 1])
    assert measured == pytest.approx(halflife, rel=0.05)
    assert new / base - 1 == pytest.approx(0.027, abs=0.01)  # the long-run response to +20% feedback: ~ +2.7% uploads


def test_saturation_bounds_the_response_to_a_huge_step():
    """Without saturation x1000 feedback would give sqrt(1000) ~ 32x uploads; log1p keeps it below 2.5x even
    with the cap out of the way, a further x1000 adds less than the first, and the default cap (3x) holds."""
    def long_run(factor, cfg):
        ref, ids = _population(5, 37.0, 2.0)
        d = CreatorDynamics(ref, cfg, days=30)
        for day in range(30):
            _feed(d, day, ids, 37.0 * factor, 2.0 * factor)
        return d.multiplier(30)[0]

    uncapped = WorldConfig(max_upload_multiplier=1e6, satisfaction_halflife_days=1.0)
    m3, m6 = long_run(1e3, uncapped), long_run(1e6, uncapped)
    assert 1.5 < m3 < 2.5
    assert m6 - m3 < m3 - 1  # diminishing returns
    assert long_run(1e9, WorldConfig(satisfaction_halflife_days=1.0)) == pytest.approx(3.0)


def test_calibration_dac_per_percent_feedback():
    """Defaults: +1% feedback to the median creator (37 exposures, 2 interactions a day, 0.35 uploads a day)
    gives ~ +0.13% expected daily active creators in the long run (DualRec: 0.13% DAC per 1% ExpoReach)."""
    def dac(factor):
        ref, ids = _population(10, 37.0, 2.0)
        d = CreatorDynamics(ref, WorldConfig(), days=120)
        for day in range(120):
            _feed(d, day, ids, 37.0 * factor, 2.0 * factor)
        return (1 - np.exp(-d.expected_uploads(120))).sum()  # P(at least one upload), Poisson approximation

    lift = dac(1.01) / dac(1.0) - 1
    assert lift == pytest.approx(0.0013, abs=0.0004)


def _silenced(cfg, n=1, days=10):
    """n creators with a healthy baseline (50 exposures, 5 interactions a day), then silence."""
    ref, ids = _population(n, 50.0, 5.0)
    return CreatorDynamics(ref, cfg, days=days), ids


def test_silence_churns_below_the_threshold_and_drops_every_upload():
    # half-life 1 day: B = 0.3 log 51 + log 6 ~ 2.97, after k silent days rho = (B / 2**k + 1) / (B + 1):
    # 0.63 after one day, 0.44 (< 0.5) after two
    cfg = WorldConfig(satisfaction_halflife_days=1.0, churn_prob=1.0, return_prob=0.0)
    d, ids = _silenced(cfg)
    rng = np.random.default_rng(0)
    replay = np.repeat(ids, 4)
    for day in range(2):
        keep, _ = d.plan(day, replay, rng)
        assert d.active.all()
    assert d.relative_satisfaction(1)[0] == pytest.approx(0.63, abs=0.01)
    keep, extra = d.plan(2, replay, rng)
    assert d.relative_satisfaction(2)[0] == pytest.approx(0.44, abs=0.01)
    assert not d.active.any() and not keep.any() and extra.sum() == 0
    assert d.diagnostics(2)["creators.churned_today"] == 1 and d.diagnostics(2)["creators.active_share"] == 0
    # silent, with no return probability: stays away
    for day in range(3, 8):
        keep, extra = d.plan(day, replay, rng)
        assert not keep.any() and extra.sum() == 0 and not d.active.any()


def test_no_churn_without_probability_and_none_above_the_threshold():
    d, ids = _silenced(WorldConfig(satisfaction_halflife_days=1.0, churn_prob=0.0))
    for day in range(10):
        d.plan(day, ids, np.random.default_rng(day))
    assert d.active.all()
    d, ids = _silenced(WorldConfig(satisfaction_halflife_days=1.0, churn_prob=1.0), days=10)
    for day in range(10):  # at baseline: rho = 1
        d.plan(day, ids, np.random.default_rng(day))
        _feed(d, day, ids, 50.0, 5.0)
    assert d.active.all()


def test_a_churned_creator_returns_when_its_satisfaction_recovers():
    cfg = WorldConfig(satisfaction_halflife_days=1.0, churn_prob=1.0, return_prob=0.0, return_threshold=0.8)
    d, ids = _silenced(cfg, days=12)
    rng = np.random.default_rng(0)
    for day in range(3):
        d.plan(day, ids, rng)
    assert not d.active.any()  # churned on day 2 (previous test)
    _feed(d, 2, ids, 50.0, 5.0)  # its catalogue gets baseline feedback again: rho = (0.22 B + 0.5 B + 1) / (B + 1)
    d.plan(3, ids, rng)
    assert d.relative_satisfaction(3)[0] < 0.8 and not d.active.any()
    _feed(d, 3, ids, 50.0, 5.0)
    keep, _ = d.plan(4, np.repeat(ids, 3), rng)  # rho = 0.83 >= 0.8: back, and uploading
    assert d.relative_satisfaction(4)[0] >= 0.8
    assert d.active.all() and keep.any()
    assert d.diagnostics(4)["creators.returned_today"] == 1


def test_daily_churn_and_return_probabilities():
    n = 4000
    cfg = WorldConfig(satisfaction_halflife_days=1.0, churn_prob=0.2, return_prob=0.1)
    d, ids = _silenced(cfg, n=n)
    st = d.state()
    st.active[: n // 2] = False  # hand-built: half the creators churned before the run
    d.load_state(st)
    d.plan(1, ids, np.random.default_rng(0))  # rho = 0.63: above the churn threshold, below the return threshold
    act = d.active
    assert act[n // 2:].all()
    assert act[: n // 2].mean() == pytest.approx(0.1, abs=0.02)  # returns with return_prob
    d.plan(2, ids, np.random.default_rng(1))  # rho = 0.44 < 0.5: active creators churn with churn_prob
    churned = ~d.active[n // 2:]
    assert churned.mean() == pytest.approx(0.2, abs=0.03)
    # the same day planned again draws no new transitions
    before = d.active
    d.plan(2, ids, np.random.default_rng(2))
    np.testing.assert_array_equal(d.active, before)


def test_followers_are_distinct_users_per_creator():
    d = CreatorDynamics(_ref(np.zeros((4, 1)), np.zeros((4, 1))), WorldConfig(), days=3)
    d.add_followers(np.array([10, 10, 10, 30]), np.array([1, 2, 1, 1]))
    d.add_followers(np.array([10, 40]), np.array([2, 7]))
    np.testing.assert_array_equal(d.followers, [2, 0, 1, 1])
    assert d.diagnostics(0)["creators.followers_mean"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="2\\*\\*32"):
        d.add_followers(np.array([10]), np.array([-1]))


def test_state_round_trip():
    cfg = WorldConfig(satisfaction_halflife_days=1.0, churn_prob=1.0, return_prob=0.0)
    d, ids = _silenced(cfg, n=3)
    rng = np.random.default_rng(0)
    for day in range(3):
        d.plan(day, ids, rng)
    d.add_followers(ids[:1], np.array([5]))
    e, _ = _silenced(cfg, n=3)
    e.load_state(d.state())
    np.testing.assert_array_equal(e.multiplier(3), d.multiplier(3))
    np.testing.assert_array_equal(e.active, d.active)
    np.testing.assert_array_equal(e.followers, d.followers)
    st = d.state()
    st.active[:] = True  # a copy: mutating it does not change the dynamics
    st.satisfaction[:] = 1e9
    assert not d.active.any() and d.multiplier(3)[0] < 1
    with pytest.raises(TypeError, match="older format"):
        e.load_state({"received": np.zeros((3, 10))})


def test_unknown_creator_raises():
    d = CreatorDynamics(_ref(np.zeros((4, 1)), np.zeros((4, 1))), WorldConfig(), days=3)
    with pytest.raises(KeyError, match="creator"):
        d.observe(0, np.array([999]), np.array([1.0]), np.array([1.0]))


def test_return_threshold_must_not_be_below_the_churn_threshold():
    with pytest.raises(ValidationError, match="return_threshold"):
        WorldConfig(churn_threshold=0.6, return_threshold=0.5)
