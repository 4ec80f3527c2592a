"""UAC: store cap N (eq. 12-13), cache expiry, activity prediction — on hand-built examples."""

from __future__ import annotations

import numpy as np
import pytest

from serving.channels.dualrec.uac import ActivityPredictor, AvailableUserStore, MatchingCache, activity_features

DAY = 86_400


def test_cap_n_and_leaving_the_available_set():
    cache = MatchingCache(n_users=3, cap=2, ttl_s=DAY)
    store = AvailableUserStore(cache)
    store.set_active(np.array([True, True, False]))  # user 2 is not predicted to visit
    assert store.available(0).tolist() == [True, True, False]
    # item 10 targets users 0, 1, 2 (ranked); user 2 is not in A -> M_0 = M_1 = {10}
    assert store.match(10, np.array([0, 1, 2]), now=0, top=5).tolist() == [0, 1]
    assert cache.size(0).tolist() == [1, 1, 0]
    # item 11 for user 0 only: |M_0| = 2 = N -> user 0 leaves A
    store.match(11, np.array([0]), now=1, top=5)
    assert store.available(1).tolist() == [False, True, False]
    # item 12 ranked [0, 1, 2], top 1: user 0 is full, so the first available one is user 1
    assert store.match(12, np.array([0, 1, 2]), now=2, top=1).tolist() == [1]
    assert sorted(cache.items_of(np.array([0]), 2)[0].tolist()) == [10, 11]
    assert sorted(cache.items_of(np.array([1]), 2)[0].tolist()) == [10, 12]


def test_activity_ablation_uses_only_the_cap():
    store = AvailableUserStore(MatchingCache(n_users=2, cap=1))
    store.set_active(np.array([False, False]))
    assert store.available(0, use_activity=False).tolist() == [True, True]
    assert store.match(5, np.array([1, 0]), now=0, top=1, use_activity=False).tolist() == [1]


def test_entries_expire_and_free_the_slot():
    cache = MatchingCache(n_users=1, cap=1, ttl_s=100)
    cache.add(np.array([0]), 7, now=0)
    assert cache.size(99).tolist() == [1] and cache.items_of(np.array([0]), 99).tolist() == [[7]]
    assert cache.size(100).tolist() == [0] and cache.items_of(np.array([0]), 100).tolist() == [[-1]]
    assert cache.add(np.array([0]), 8, now=100).tolist() == [0]  # the expired slot is reused
    cache.remove(np.array([0]), np.array([8]))
    assert cache.size(101).tolist() == [0]


def test_matches_keep_their_source_until_served():
    store = AvailableUserStore(MatchingCache(n_users=3, cap=2))
    store.set_active(np.array([True, True, True]))
    store.match(7, np.array([2, 0, 1]), now=0, top=3, sources=np.array([1, 0, 2]))
    assert store.cache.remove(np.array([0, 2, 1]), np.array([7, 7, 9])).tolist() == [0, 1]  # (1, 9) was never matched
    assert store.cache.items_of(np.array([0, 1, 2]), 1).tolist() == [[-1, -1], [7, -1], [-1, -1]]


def test_bad_cap_is_refused():
    with pytest.raises(ValueError, match="cap N"):
        MatchingCache(n_users=1, cap=0)


def test_activity_features_layout():
    visits = np.array([[1, 0, 1]])
    inter = np.array([[2, 0, 3]])
    f = activity_features(visits, inter, day=2, weekday_of_day0=5)
    assert f.shape == (1, 32)
    assert f[0, :4].tolist() == [1, 0, 1, 0]  # most recent first, zero before day 0
    assert f[0, 30] == (5 + 3) % 7 and f[0, 31] == 5


def test_activity_model_learns_weekly_and_heterogeneous_users():
    rng = np.random.default_rng(0)
    U, D = 600, 28
    p = rng.choice([0.05, 0.5, 0.95], U)
    weekend = (np.arange(D) % 7) >= 5
    visits = (rng.random((U, D)) < np.clip(p[:, None] * np.where(weekend, 1.3, 0.8), 0, 1)).astype(int)
    inter = visits * rng.poisson(2, (U, D))
    model = ActivityPredictor(threshold=0.5).fit(visits, inter, last_day=D - 2)
    prob = model.predict_proba(visits, inter, day=D - 2)
    truth = visits[:, D - 1]
    hit_active = truth[model.active(visits, inter, day=D - 2)].mean()
    assert hit_active > truth.mean() + 0.2  # users it calls active visit far more often than users overall
    assert prob[p == 0.95].mean() > prob[p == 0.05].mean() + 0.5


def test_activity_model_without_users_or_with_a_constant_history():
    empty = np.zeros((0, 3), int)
    m = ActivityPredictor().fit(empty, empty, last_day=2)
    assert m.active(empty, empty, day=2).shape == (0,)
    ones = np.ones((4, 3), int)
    assert ActivityPredictor().fit(ones, ones, last_day=2).active(ones, ones, day=2).all()
