"""The DualRec arm end to end on a hand-built policy: matching on upload under the UAC store, the result-cache
channel with expiry, the boosted combined ranking under the budget, diagnostics, HTTP targets, checkpoints."""

import asyncio

import numpy as np
import pytest
import torch

from serving.arms import build_arm

from trainers.arm_context import ArmContext
from serving.channels.dualrec.creator_side import RETRIEVALS, _dedupe_rows
from serving.channels.dualrec.diagnostics import _visited_within
from serving.http import LocalBackend, UploadRequest, handle_upload
from simulator.core.config import ArmSpec, DualRecSpec, ModelConfig

torch.set_num_threads(1)
DAY = 86_400
T0 = 100 * DAY
S = 4


def _policy(**dr):
    spec = ArmSpec(name="dr", kind="dualrec", share=0.5,
                   dualrec=DualRecSpec(**{"targets": 5, "cap": 2, "two_tower_k": 50, **dr}))
    ctx = ArmContext(model=ModelConfig(dim=8, id_buckets=1024, hidden=16), slate_size=S, n_item_dense=1, seed=3)
    return build_arm(spec, ctx)


def _upload(p, ids, ts, creator=1):
    ids = np.asarray(ids, np.int64)
    n = len(ids)
    p.upload_items(ids, np.full(n, creator), np.full(n, ts, np.int64), ids % 3, np.ones((n, 1), np.float32))
    return p.last_targets


def _day0(p, users, visit_twice=()):
    """A first day: catalogue items, every user visits once and likes something; the day ends."""
    _upload(p, np.arange(20), T0 - DAY)
    for u in users:
        sl = p.recommend(np.array([u]), np.array([T0 + 100]), seed=0)
        labels = np.zeros((S, 5), bool)
        labels[0, 0] = True
        p.feedback(np.full(S, u), sl.item_ids[0], np.full(S, T0 + 100), labels)
    return p.end_day(T0 + DAY)


def test_helpers_dedupe_and_visit_window():
    np.testing.assert_array_equal(_dedupe_rows(np.array([[3, 1, 3, -1, 1, 2]])), [[3, 1, 2, -1, -1, -1]])
    ids, tags = _dedupe_rows(np.array([[3, 1, 3, -1, 1, 2]]), np.array([[0, 0, 1, 1, 2, 2]]))
    np.testing.assert_array_equal(ids, [[3, 1, 2, -1, -1, -1]])
    np.testing.assert_array_equal(tags, [[0, 0, 2, -1, -1, -1]])  # a user found twice keeps its first retrieval
    keys = np.sort(np.array([(5 << 40) | 100, (5 << 40) | 300, (7 << 40) | 50], np.int64))
    # user 5 visits at 100 and 300: a match at 150 is hit within 200 s (300) but not within 100 s
    assert _visited_within(keys, np.array([5, 5, 7]), np.array([150, 150, 50]), 200).tolist() == [True, True, False]
    assert _visited_within(keys, np.array([5]), np.array([150]), 100).tolist() == [False]


def test_no_matching_before_the_first_day_ends_then_targets_respect_the_store():
    p = _policy(use_activity=False)
    ch = p.channels[0]
    assert p.channel_names[0] == "dualrec"
    assert _upload(p, [100], T0) == {}  # no activity model and no user index yet
    users = np.arange(1000, 1012)
    _day0(p, users)
    assert len(ch.creator_side.user_index) == len(p.store.users) == 12
    targets = {}
    for k in range(8):  # eight new items: 8 * 5 targets > 12 users * cap 2
        targets.update(_upload(p, [200 + k], T0 + DAY + 10 + k))
    assert len(targets) == 8
    counts = np.zeros(len(p.store.users), int)
    for item, us in targets.items():
        assert len(us) <= 5 and len(set(us)) == len(us)
        assert set(us) <= set(users.tolist())  # only users the arm knows
        counts[p.store.users.rows(np.array(us, np.int64))] += 1
    assert counts.max() <= 2  # eq. 12-13: nobody gets more than N matches
    assert (counts == 2).sum() >= 8  # and the cap binds: users leave A as they fill up


def test_activity_prediction_restricts_matching_to_predicted_visitors():
    p = _policy()
    _day0(p, np.arange(1000, 1010))
    ch = p.channels[0]
    # one observed day: a_u = visited today (everyone); mark half inactive by hand
    ch.store.set_active(np.arange(10) % 2 == 0)
    t = _upload(p, [300], T0 + DAY + 5)
    rows = p.store.users.rows(np.array(t[300], np.int64))
    assert len(rows) and (rows % 2 == 0).all()
    # the shadow without activity prediction matched from the same ranked list regardless of a_u
    shadow = ch.diagnostics.matches["no_activity"][-1][0]
    assert (shadow % 2 == 1).any()


def test_matched_items_are_served_boosted_under_the_budget_then_leave_m_u():
    p = _policy(use_activity=False, targets=12, alpha=5.0, budget=0.25)
    users = np.arange(1000, 1012)
    _day0(p, users)
    _upload(p, [400, 401], T0 + DAY + 10)
    now = T0 + DAY + 20
    m = p.channels[0].store.cache.items_of(p.store.users.rows(users), now)
    assert ((m >= 0).sum(1) == 2).all()  # every user holds both items
    sl = p.recommend(users, np.full(len(users), now), seed=1)
    dual = sl.channel == p.channel_names.index("dualrec")
    assert 0 < dual.sum() <= int(0.25 * len(users) * S)  # the budget caps matched items' slots
    served_rows = p.store.users.rows(users[dual.any(1)])
    # served (user, item) pairs left M_u; the rest are still there until they expire
    left = p.channels[0].store.cache.items_of(served_rows, now)
    for r, row in zip(served_rows, left):
        served = sl.item_ids[np.flatnonzero(users == p.store.users.ids[r])[0]]
        assert not set(row[row >= 0].tolist()) & set(served.tolist())
    assert (p.channels[0].store.cache.items_of(p.store.users.rows(users), now + DAY) < 0).all()  # expired
    diag = p.end_day(T0 + 2 * DAY)
    assert diag["dualrec.expo_share"] == pytest.approx(dual.sum() / (sl.item_ids >= 0).sum())
    assert diag["dualrec.coverage.creator_side.actual"] == 1.0
    # Table 3: every served matched item is credited to the retrieval that found its user
    by_source = {name: diag[f"dualrec.served_by.{name}"] for name in RETRIEVALS}
    assert sum(by_source.values()) == dual.sum() and by_source["oracle"] == 0


def test_boost_lifts_matched_items_in_the_final_ranking():
    scores = {}
    for alpha in (0.0, 50.0):
        p = _policy(use_activity=False, targets=12, alpha=alpha, budget=1.0)
        users = np.arange(1000, 1012)
        _day0(p, users)
        _upload(p, [400, 401], T0 + DAY + 10)
        sl = p.recommend(users, np.full(len(users), T0 + DAY + 20), seed=1)
        scores[alpha] = (sl.channel == p.channel_names.index("dualrec")).sum()
    assert scores[50.0] > scores[0.0]


def test_hit_rate_counts_matched_users_who_come_back():
    p = _policy(use_activity=False, targets=12)
    users = np.arange(1000, 1012)
    _day0(p, users)
    _upload(p, [500], T0 + DAY + 10)
    p.recommend(users[:3], np.full(3, T0 + DAY + 50), seed=0)  # 3 of the 12 matched users come back
    p.end_day(T0 + 2 * DAY)
    diag = p.end_day(T0 + 3 * DAY)  # the matches' one-day window has closed
    assert diag["dualrec.hit_rate.actual"] == pytest.approx(3 / 12)
    assert diag["dualrec.hit_pairs.actual"] == 12


def test_upload_endpoint_returns_the_target_users():
    p = _policy(use_activity=False)
    _day0(p, np.arange(1000, 1010))
    req = UploadRequest.model_validate({"items": [{"item_id": 900, "creator_id": 1, "upload_ts": T0 + DAY + 5}]})
    resp = asyncio.run(handle_upload(LocalBackend({"dr": p}), "dr", req))
    assert list(resp.targets) == [900] and 0 < len(resp.targets[900]) <= 5


def test_item_similarity_retrieval_finds_likers_of_similar_items():
    p = _policy(use_activity=False, item_sim=True, user_sim=False)
    _day0(p, np.arange(1000, 1010))
    ch = p.channels[0]
    _upload(p, [600], T0 + DAY + 5)
    row = p.store.items.rows(np.array([600]))
    sim = ch.creator_side.sim_items[row[0]]
    assert (sim >= 0).any() and (p.store.item_seq_count[sim[sim >= 0]] > 0).all()  # similar items with likers
    likers = set(p.store.sequences(sim[sim >= 0])[0].ravel().tolist()) - {-1}
    cand = set(p.store.users.ids[c] for c in ch.creator_side.candidates(p.store, row)[0][0] if c >= 0)
    assert likers <= cand


def test_snapshot_restore_gives_the_same_matches():
    a = _policy(use_activity=False)
    _day0(a, np.arange(1000, 1010))
    b = _policy(use_activity=False)
    b.restore(a.snapshot())
    assert _upload(a, [700], T0 + DAY + 5) == _upload(b, [700], T0 + DAY + 5)


def test_without_the_store_users_pile_up_matches_beyond_the_cap():
    users = np.arange(1000, 1006)
    counts = {}
    for use_store in (True, False):
        p = _policy(use_store=use_store, targets=6, cap=2)
        _day0(p, users)
        p.channels[0].store.set_active(np.zeros(6, bool))  # nobody predicted active: matters only with the store
        for k in range(5):
            _upload(p, [800 + k], T0 + DAY + 10 + k)
        counts[use_store] = p.channels[0].store.cache.size(T0 + DAY + 100)
    assert counts[True].max() == 0  # the store: no active user, no match
    assert counts[False].max() == 5 > 2  # no store: every item to every user, past N


def test_days_without_any_user_are_fine():
    p = _policy()
    _upload(p, np.arange(5), T0 - DAY)
    for d in range(1, 4):  # nobody ever visits this arm
        diag = p.end_day(T0 + d * DAY)
        assert diag["dualrec.active_share"] == 0.0
    assert _upload(p, [50], T0 + 3 * DAY + 1) == {}
