"""The IHM arm on hand-built policies: real-time inference with the rate limit and the impressions trigger, the
KV store and in-place index updates, ATS by hand, frozen vs periodic weights, the daily and static ablations,
feature logging and checkpoints."""

from __future__ import annotations

from operator import attrgetter

import numpy as np
import pytest
import torch

from serving.arms import arm_tasks, build_arm

from trainers.arm_context import ArmContext, arm_context
from serving.channels.base import RequestContext
from serving.channels.ihm.realtime import NEVER
from simulator.core.config import ArmSpec, IHMArmSpec, ModelConfig, TrainConfig
from trainers.learner import concat_batches
from trainers.online import make_learner

torch.set_num_threads(1)
DAY = 86_400
T0 = 100 * DAY
S = 4
CTX = ArmContext(model=ModelConfig(dim=8, id_buckets=1024, hidden=16), slate_size=S, n_item_dense=1, seed=0)


def _spec(**kw) -> ArmSpec:
    ih = {"k": 5, "rate_limit_s": 300, "impressions_trigger": 0, **kw}
    return ArmSpec(name="ihm", kind="ihm", share=1.0, ihm=IHMArmSpec(**ih))


def _policy(**kw):
    p = build_arm(_spec(**kw), CTX)
    ids = np.arange(6)
    p.upload_items(ids, ids % 2, np.full(6, T0), ids % 3, np.ones((6, 1), np.float32))
    return p


def _ch(p):
    return next(c for c in p.channels if c.name == "ihm")


def _feedback(p, users, items, ts, like=True):
    n = len(users)
    y = np.zeros((n, 5), bool)
    y[:, 0] = like
    p.feedback(np.asarray(users), np.asarray(items), np.asarray(ts, np.int64), y)


def _vec(ch, row: int) -> np.ndarray:
    return np.asarray(ch.index.index.get_items([row]))[0]


def _row(p, item: int) -> int:
    return int(p.store.items.rows(np.array([item]))[0])


def test_uploads_enter_the_kv_store_and_index_with_the_empty_history_embedding():
    p = _policy()
    ch = _ch(p)
    assert p.channel_names[-1] == "ihm"
    assert len(ch.index) == 6 and ch.counts["upload_inferences"] == 6
    r = _row(p, 2)
    np.testing.assert_allclose(_vec(ch, r), ch.kv_vec[r], atol=1e-6)
    with torch.no_grad():  # no history: e_i = normalize(E_S)
        es = ch.item_model.static(torch.tensor([2]), torch.tensor([0]), torch.tensor([2]), torch.ones(1, 1))
    np.testing.assert_allclose(ch.kv_vec[r], torch.nn.functional.normalize(es, dim=-1)[0].numpy(), atol=1e-5)
    assert ch.kv_ts[r] == T0


def test_a_like_updates_the_items_vector_in_place_without_a_weight_update():
    p = _policy()
    ch = _ch(p)
    r = _row(p, 2)
    before = _vec(ch, r).copy()
    _feedback(p, [7], [2], [T0 + 100])
    after = _vec(ch, r)
    assert len(ch.index) == 6 and ch.counts["inferences"] == 1 and ch.steps_loaded == -1
    assert not np.allclose(before, after)  # same label, new vector: the history now holds user 7
    np.testing.assert_allclose(after, ch.infer(p, np.array([r]))[0], atol=1e-5)
    np.testing.assert_allclose(after, ch.kv_vec[r], atol=1e-6)
    assert ch.kv_ts[r] == T0 + 100


def test_rate_limit_defers_the_second_like_until_the_gap_expires():
    p = _policy(rate_limit_s=300)
    ch = _ch(p)
    r = _row(p, 2)
    _feedback(p, [7], [2], [T0 + 100])  # inferred at once
    first = _vec(ch, r).copy()
    _feedback(p, [8], [2], [T0 + 200])  # inside the gap: queued for T0 + 400
    assert ch.counts["inferences"] == 1 and ch.counts["deferred"] == 1
    assert ch.limiter.due[r] == T0 + 400 and ch.kv_ts[r] == T0 + 100
    np.testing.assert_allclose(_vec(ch, r), first, atol=1e-6)  # the index does not reflect user 8 yet
    _feedback(p, [9], [2], [T0 + 250])  # merges into the queued inference
    assert ch.counts["inferences"] == 1 and ch.counts["deferred"] == 1
    _feedback(p, [5], [3], [T0 + 399], like=False)  # a later feedback before the gap expires: still queued
    assert ch.limiter.due[r] == T0 + 400
    _feedback(p, [5], [4], [T0 + 450], like=False)  # the gap has expired: the queued inference runs
    assert ch.counts["inferences"] == 2 and ch.limiter.due[r] == NEVER and ch.kv_ts[r] == T0 + 400
    assert not np.allclose(_vec(ch, r), first)
    np.testing.assert_allclose(_vec(ch, r), ch.infer(p, np.array([r]))[0], atol=1e-5)  # users 7, 8 and 9


def test_two_likes_in_one_call_one_inference_now_one_queued_and_history_read_up_to_the_inference_time():
    p = _policy(rate_limit_s=300)
    ch = _ch(p)
    r = _row(p, 2)
    _feedback(p, [7, 8], [2, 2], [T0 + 100, T0 + 200])
    assert ch.counts["inferences"] == 1 and ch.limiter.due[r] == T0 + 400
    # the vector served now is the inference at T0 + 100: user 7 only
    np.testing.assert_allclose(_vec(ch, r), ch.infer(p, np.array([r]), np.array([T0 + 100]))[0], atol=1e-5)
    assert not np.allclose(_vec(ch, r), ch.infer(p, np.array([r]))[0], atol=1e-5)
    # a request batch after the gap applies the queued inference before anything is retrieved
    ctx = RequestContext(p.store.ensure_users(np.array([1])), np.array([T0 + 500]), np.random.default_rng(0), p)
    ch.on_requests(p, ctx)
    assert ch.kv_ts[r] == T0 + 400
    np.testing.assert_allclose(_vec(ch, r), ch.infer(p, np.array([r]))[0], atol=1e-5)


def test_every_x_impressions_triggers_an_inference():
    p = _policy(impressions_trigger=3, rate_limit_s=0)
    ch = _ch(p)
    r = _row(p, 1)
    _feedback(p, [1, 2], [1, 1], [T0 + 10, T0 + 20], like=False)
    assert ch.counts["inferences"] == 0
    _feedback(p, [3], [1], [T0 + 30], like=False)  # the third impression
    assert ch.counts["inferences"] == 1 and ch.kv_ts[r] == T0 + 30
    _feedback(p, [4, 5], [1, 1], [T0 + 40, T0 + 50], like=False)
    assert ch.counts["inferences"] == 1
    _feedback(p, [6], [1], [T0 + 60], like=False)
    assert ch.counts["inferences"] == 2 and ch.kv_ts[r] == T0 + 60


def test_ats_by_hand_per_day_and_pooled_over_the_run():
    p = _policy(rate_limit_s=300)
    ch = _ch(p)
    _feedback(p, [7], [0], [T0 + 100])  # inferred at 100: ATS 0
    _feedback(p, [8, 9], [0, 1], [T0 + 200, T0 + 250])  # item 0 queued for 400 (ATS 200); item 1 at once (ATS 0)
    _feedback(p, [5], [3], [T0 + 1000], like=False)  # the queue runs
    d = p.end_day(T0 + DAY)
    assert d["ihm.ats_samples"] == 3 and d["ihm.inferences"] == 3 and d["ihm.deferred"] == 1
    assert d["ihm.ats_p50_min"] == 0.0
    assert d["ihm.ats_p95_min"] == pytest.approx(180 / 60)  # percentile of [0, 0, 200]: 0 + 0.9 * 200 s
    assert d["ihm.run.ats_samples"] == 3 and d["ihm.run.ats_p95_min"] == pytest.approx(3.0)
    # day 2: one like on a fresh item at T0 + DAY + 10, another 60 s later (queued until + 310)
    p.upload_items(np.array([50]), np.array([1]), np.array([T0 + DAY]), np.array([0]), np.ones((1, 1), np.float32))
    _feedback(p, [1], [50], [T0 + DAY + 10])
    _feedback(p, [2], [50], [T0 + DAY + 70])
    d2 = p.end_day(T0 + 2 * DAY)  # the day's end runs the queue: 310 - 70 = 240 s
    assert d2["ihm.ats_samples"] == 2 and d2["ihm.ats_p50_min"] == pytest.approx(120 / 60)
    pooled = np.array([0, 0, 200, 0, 240])
    assert d2["ihm.run.ats_samples"] == 5
    assert d2["ihm.run.ats_p50_min"] == pytest.approx(np.percentile(pooled, 50) / 60)
    assert d2["ihm.run.ats_p95_min"] == pytest.approx(np.percentile(pooled, 95) / 60)


def _served_batch(p, users, ts):
    """Serve one request per user at ``ts``, everyone likes everything: the training batch the driver would build."""
    users = np.asarray(users)
    sl = p.recommend(users, np.full(len(users), ts, np.int64), seed=0)
    ri, si = np.nonzero(sl.item_ids >= 0)
    labels = np.zeros((len(ri), 5), bool)
    labels[:, 0] = True
    batch = {"user_id": users[ri], "item_id": sl.item_ids[ri, si], "creator_id": sl.creator_id[ri, si],
             "category": sl.category[ri, si], "user_dense": sl.user_dense[ri], "item_dense": sl.item_dense[ri, si],
             "pair_dense": sl.pair_dense[ri, si], "labels": labels, **{k: v[ri, si] for k, v in sl.extra.items()}}
    p.feedback(users[ri], sl.item_ids[ri, si], np.full(len(ri), ts, np.int64), labels)
    return batch


def test_feature_logging_gives_the_history_at_serve_time_and_the_users_recent_items():
    p = _policy()
    _feedback(p, [7, 7], [0, 1], [T0 + 10, T0 + 20])  # user 7 liked items 0 and 1; they hold user 7
    b = _served_batch(p, [7, 8], T0 + 100)
    assert {"ihm_hist", "ihm_hlen", "ihm_useq", "ihm_ulen", "ihm_day"} <= set(b)
    u7 = b["user_id"] == 7
    assert (b["ihm_ulen"][u7] == 2).all() and (b["ihm_useq"][u7][:, :2] == [0, 1]).all()
    assert (b["ihm_ulen"][~u7] == 0).all() and (b["ihm_useq"][~u7] == -1).all()
    assert (b["ihm_day"] == T0 // DAY).all()
    # items 0 and 1 hold user 7 in their histories (7 saw them, so only 8 can be served them)
    liked = np.isin(b["item_id"], [0, 1])
    assert not (liked & u7).any()
    np.testing.assert_array_equal(b["ihm_hlen"], np.where(liked, 1, 0))
    assert (b["ihm_hist"][liked, 0] == 7).all() and (b["ihm_hist"][:, 1:] == -1).all()


def test_training_freezes_after_train_days_and_the_channel_stops_loading():
    spec = _spec(train_days=1)
    p = build_arm(spec, CTX)
    ids = np.arange(30)
    p.upload_items(ids, ids % 4, np.full(30, T0), ids % 3, np.ones((30, 1), np.float32))
    learner = make_learner(spec, CTX, TrainConfig(), 0, arm_tasks)
    task = learner.extra_tasks[0]
    assert task.name == "ihm"
    ch = _ch(p)
    b0 = _served_batch(p, np.arange(100, 110), T0 + 100)
    st = learner.train_tick(b0, tick_seed=1)
    assert st["ihm.samples"] == len(b0["user_id"]) and st["ihm.frozen"] == 0.0 and task.steps > 0
    p.set_weights(1, learner.weights(), T0 + 200)
    assert ch.steps_loaded == task.steps and ch.counts["weight_loads"] == 1
    b1 = _served_batch(p, np.arange(100, 110), T0 + DAY + 100)  # day 1 >= first day + train_days
    assert b1["ihm_hist"].shape[1] == 0 and (b1["ihm_ulen"] == -1).all()  # nothing logged once frozen
    steps = task.steps
    st = learner.train_tick(b1, tick_seed=2)
    assert st["ihm.frozen"] == 1.0 and task.steps == steps
    before = ch.kv_vec.copy()
    p.set_weights(2, learner.weights(), T0 + DAY + 200)
    assert ch.counts["weight_loads"] == 1  # the frozen weights are not loaded again (no re-inference)
    np.testing.assert_array_equal(ch.kv_vec, before)


def test_periodic_retraining_keeps_training_and_loading():
    spec = _spec(train_days=1, periodic_retrain=True)
    p = build_arm(spec, CTX)
    ids = np.arange(30)
    p.upload_items(ids, ids % 4, np.full(30, T0), ids % 3, np.ones((30, 1), np.float32))
    learner = make_learner(spec, CTX, TrainConfig(), 0, arm_tasks)
    task = learner.extra_tasks[0]
    learner.train_tick(_served_batch(p, np.arange(100, 110), T0 + 100), tick_seed=1)
    p.set_weights(1, learner.weights(), T0 + 200)
    b1 = _served_batch(p, np.arange(110, 120), T0 + DAY + 100)
    assert b1["ihm_hist"].shape[1] > 0 and (b1["ihm_ulen"] >= 0).all()
    steps = task.steps
    st = learner.train_tick(b1, tick_seed=2)
    assert st["ihm.frozen"] == 0.0 and task.steps > steps
    p.set_weights(2, learner.weights(), T0 + DAY + 200)
    assert _ch(p).counts["weight_loads"] == 2 and _ch(p).steps_loaded == task.steps


def test_serving_starts_from_the_tasks_initial_weights():
    spec = _spec()
    p = build_arm(spec, arm_context(CTX, 0))  # as the runtimes build the arm with index 0
    task = make_learner(spec, CTX, TrainConfig(), 0, arm_tasks).extra_tasks[0]
    for k, v in _ch(p).item_model.state_dict().items():
        torch.testing.assert_close(v, task.item_tower.state_dict()[k])


def test_daily_ablation_changes_the_index_only_at_the_days_end():
    spec = _spec(realtime=False)
    p = build_arm(spec, CTX)
    ids = np.arange(30)
    p.upload_items(ids, ids % 4, np.full(30, T0), ids % 3, np.ones((30, 1), np.float32))
    ch = _ch(p)
    r = _row(p, 2)
    before = _vec(ch, r).copy()
    _feedback(p, [7], [2], [T0 + 100])
    np.testing.assert_array_equal(_vec(ch, r), before)
    assert ch.kv_ts[r] == T0 and ch.counts["inferences"] == 0
    learner = make_learner(spec, CTX, TrainConfig(), 0, arm_tasks)
    batch = _served_batch(p, np.arange(100, 110), T0 + 200)  # every exposure liked at T0 + 200
    learner.train_tick(batch, tick_seed=1)
    model_before = {k: v.clone() for k, v in ch.item_model.state_dict().items()}
    p.set_weights(1, learner.weights(), T0 + 300)
    for k, v in ch.item_model.state_dict().items():
        torch.testing.assert_close(v, model_before[k])  # weights wait for the day's end
    np.testing.assert_array_equal(_vec(ch, r), before)
    d = p.end_day(T0 + DAY)
    assert ch.steps_loaded > 0 and ch.kv_ts[r] == T0 + DAY
    assert not np.allclose(_vec(ch, r), before)
    np.testing.assert_allclose(_vec(ch, r), ch.infer(p, np.array([r]))[0], atol=1e-5)
    assert d["ihm.batch_inferences"] == 30 and d["ihm.inferences"] == 0
    # ATS by hand: one like at T0 + 100 and the batch's likes at T0 + 200, all reflected at T0 + DAY
    assert d["ihm.ats_samples"] == 1 + len(batch["user_id"])
    assert d["ihm.ats_p50_min"] == pytest.approx((DAY - 200) / 60)


def test_static_ablation_ignores_history():
    p = _policy(static_only=True)
    ch = _ch(p)
    r = _row(p, 2)
    before = _vec(ch, r).copy()
    _feedback(p, [7, 8], [2, 2], [T0 + 100, T0 + 900])
    np.testing.assert_array_equal(_vec(ch, r), before)
    assert ch.counts["inferences"] == 0 and len(ch.ats.pending_item) == 0
    np.testing.assert_allclose(ch.infer(p, np.array([r]))[0], before, atol=1e-6)  # the history makes no difference
    d = p.end_day(T0 + DAY)
    assert "ihm.ats_p50_min" not in d and d["ihm.ats_samples"] == 0


def test_retrieval_returns_only_cold_items_from_the_index():
    p = _policy(cold_max_exposures=2)
    _feedback(p, [1, 2], [0, 0], [T0 + 10, T0 + 20], like=False)  # item 0 reaches 2 exposures: no longer cold
    ch = _ch(p)
    users = p.store.ensure_users(np.array([9]))
    got = ch.retrieve(RequestContext(users, np.array([T0 + 100]), np.random.default_rng(0), p)).rows
    assert got.shape == (1, 5)
    assert sorted(got[0].tolist()) == [_row(p, i) for i in range(1, 6)]  # all cold items, item 0 left out
    d = p.end_day(T0 + DAY)
    assert d["ihm.index_size"] == 5  # the day's compaction keeps the still-cold items
    got = ch.retrieve(RequestContext(users, np.array([T0 + 80 * 3600]), np.random.default_rng(0), p)).rows
    assert (got == -1).all()  # every item is older than 72 h


def test_snapshot_restore_gives_the_same_state_and_the_same_future():
    p = _policy(impressions_trigger=2)
    _feedback(p, [7, 8], [2, 3], [T0 + 100, T0 + 150])
    _feedback(p, [9], [2], [T0 + 200])  # queued
    q = _policy(impressions_trigger=2)
    q.restore(p.snapshot())
    a, b = _ch(p), _ch(q)
    for name in ("kv_vec", "kv_ts", "limiter.last_infer", "limiter.due", "ats.pending_item", "ats.pending_ts",
                 "seq_seen", "expo_seen"):
        np.testing.assert_array_equal(attrgetter(name)(a), attrgetter(name)(b), err_msg=name)
    np.testing.assert_array_equal(a.index.index.get_items(list(range(6))), b.index.index.get_items(list(range(6))))
    for pol in (p, q):
        _feedback(pol, [4, 5], [2, 4], [T0 + 600, T0 + 700])
    np.testing.assert_array_equal(a.kv_vec, b.kv_vec)
    assert p.end_day(T0 + DAY) == q.end_day(T0 + DAY)
    sa = p.recommend(np.array([7, 11]), np.array([T0 + DAY + 5, T0 + DAY + 5]), seed=1)
    sb = q.recommend(np.array([7, 11]), np.array([T0 + DAY + 5, T0 + DAY + 5]), seed=1)
    np.testing.assert_array_equal(sa.item_ids, sb.item_ids)


def test_learner_trains_the_ihm_task_on_a_driver_style_tick():
    spec = _spec()
    p = build_arm(spec, CTX)
    ids = np.arange(40)
    p.upload_items(ids, ids % 4, np.full(40, T0), ids % 3, np.ones((40, 1), np.float32))
    rounds = [_served_batch(p, np.arange(100, 120), T0 + 100 + r) for r in range(2)]
    batch = concat_batches(rounds)
    learner = make_learner(spec, CTX, TrainConfig(), 0, arm_tasks)
    st = learner.train_tick(batch, tick_seed=3)
    assert np.isfinite(st["ihm.loss"]) and st["ihm.samples"] == len(batch["user_id"])
    w = learner.weights()["ihm"]
    assert int(w["meta.steps"]) == learner.extra_tasks[0].steps > 0


def test_a_like_seen_after_a_later_inference_of_its_item_is_late_and_reported_apart():
    p = _policy(rate_limit_s=300)
    _feedback(p, [7], [2], [T0 + 500])  # inferred at 500
    _feedback(p, [8], [2], [T0 + 100])  # round order: an earlier like arrives later; queued for 800
    _feedback(p, [5], [3], [T0 + 900], like=False)
    d = p.end_day(T0 + DAY)
    assert d["ihm.late"] == 1 and d["ihm.ats_samples"] == 2
    assert d["ihm.ats_p95_min"] == pytest.approx(np.percentile([0, 700], 95) / 60)
    assert d["ihm.ats_ontime_p95_min"] == 0.0 and d["ihm.run.ats_ontime_p50_min"] == 0.0
