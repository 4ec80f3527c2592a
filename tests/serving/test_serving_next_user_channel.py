"""The Next-User channel inside an arm: index of cold items, regeneration on likes, cold filter, feature logging."""

from __future__ import annotations

import numpy as np
import pytest

from simulator.core.config import ArmSpec, ModelConfig, NextUserSpec
from serving.arms import arm_tasks, build_arm
from trainers.arm_context import ArmContext
from trainers.online import make_learner
from simulator.core.config import TrainConfig

H = 3600


@pytest.fixture
def arm():
    spec = ArmSpec(name="nu", kind="next_user", share=1.0,
                   next_user=NextUserSpec(k=5, cold_max_exposures=3, cold_max_age_hours=10))
    ctx = ArmContext(model=ModelConfig(dim=8, id_buckets=1024, hidden=16), slate_size=4, n_item_dense=1, seed=0)
    p = build_arm(spec, ctx)
    ids = np.arange(6)
    p.upload_items(ids, ids % 2, np.zeros(6, np.int64), ids % 3, np.ones((6, 1), np.float32))
    return spec, ctx, p


def _nu(p):
    return next(c for c in p.channels if c.name == "next_user")


def test_uploads_enter_the_index_with_prefix_only_vectors(arm):
    _, _, p = arm
    ch = _nu(p)
    assert len(ch.index) == 6 and ch.regenerations == 6


def test_a_like_regenerates_the_items_vector_in_place(arm):
    _, _, p = arm
    ch = _nu(p)
    before = ch.index.index.get_items([2])[0].copy()
    y = np.zeros((1, 5), bool)
    y[0, 0] = True  # like
    p.feedback(np.array([7]), np.array([2]), np.array([H]), y)
    after = ch.index.index.get_items([2])[0]
    assert len(ch.index) == 6 and ch.regenerations == 7
    assert not np.allclose(before, after)  # same label, new u_next (the sequence now holds user 7)
    np.testing.assert_allclose(after, ch.generate(p, np.array([2]))[0], atol=1e-5)


def test_only_cold_items_are_retrieved(arm):
    _, _, p = arm
    y = np.zeros((3, 5), bool)
    p.feedback(np.array([1, 2, 3]), np.array([0, 0, 0]), np.array([H, H, H]), y)  # item 0 reaches 3 exposures
    rows = p.store.items.rows(np.array([0]))
    from serving.channels.base import RequestContext

    ctx = RequestContext(p.store.ensure_users(np.array([9, 9])), np.array([2 * H, 20 * H]), np.random.default_rng(0), p)
    got = _nu(p).retrieve(ctx).rows
    assert rows[0] not in got[0]  # too many exposures
    assert (got[1] == -1).all()  # every item is older than 10 h at 20 h


def test_log_features_give_the_sequence_seen_at_serve_time(arm):
    _, _, p = arm
    y = np.zeros((2, 5), bool)
    y[:, 1] = True  # comments
    p.feedback(np.array([5, 6]), np.array([1, 1]), np.array([H, 2 * H]), y)
    sl = p.recommend(np.array([8]), np.array([3 * H]), seed=0)
    seq, ln = sl.extra["nu_seq"][0], sl.extra["nu_len"][0]
    for slot, item in enumerate(sl.item_ids[0]):
        if item == 1:
            assert ln[slot] == 2 and seq[slot, :2].tolist() == [5, 6]
        elif item >= 0:
            assert ln[slot] == 0


def test_weights_from_the_learner_swap_in_and_snapshot_round_trips(arm):
    spec, ctx, p = arm
    learner = make_learner(spec, ctx, TrainConfig(batch_size=8), 0, arm_tasks)
    w = learner.weights()
    assert "next_user" in w
    p.set_weights(1, w, ts=H)
    ch = _nu(p)
    q = p.recommend(np.array([3]), np.array([2 * H]), seed=1)
    data = p.snapshot()
    p2 = build_arm(spec, ctx)
    p2.restore(data)
    q2 = p2.recommend(np.array([3]), np.array([2 * H]), seed=1)
    np.testing.assert_array_equal(q.item_ids, q2.item_ids)
    assert len(_nu(p2).index) == len(ch.index)


def test_learner_trains_next_user_on_logged_cold_exposures(arm):
    spec, ctx, p = arm
    learner = make_learner(spec, ctx, TrainConfig(batch_size=8), 0, arm_tasks)
    n = 16
    rng = np.random.default_rng(0)
    labels = np.zeros((n, 5), bool)
    labels[::2, 0] = True
    batch = {"user_id": rng.integers(0, 50, n), "item_id": rng.integers(0, 6, n), "creator_id": rng.integers(0, 2, n),
             "category": rng.integers(0, 3, n), "user_dense": rng.random((n, 3)).astype(np.float32),
             "item_dense": np.ones((n, 1), np.float32), "pair_dense": np.zeros((n, 3), np.float32), "labels": labels,
             "nu_seq": np.where(np.arange(50)[None, :] < 2, 7, -1).repeat(n, 0), "nu_len": np.full(n, 2)}
    batch["nu_len"][0] = -1  # not a cold-item exposure: excluded
    stats = learner.train_tick(batch, tick_seed=3)
    assert stats["next_user.samples"] == n - 1
    assert np.isfinite(stats["next_user.contrastive"]) and stats["next_user.aux"] > 0
