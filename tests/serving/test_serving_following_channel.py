"""The following channel: new items of creators the user follows, from the follow labels in the arm's feedback."""

import numpy as np

from serving.arms import build_arm

from trainers.arm_context import ArmContext
from serving.channels.basic import FollowingChannel
from serving.channels.base import RequestContext
from simulator.core.config import ArmSpec, ModelConfig, StackConfig

DAY = 86_400
T = 10 * DAY
FOLLOW = np.array([0, 0, 1, 0, 0], bool)


def _policy(**stack):
    spec = ArmSpec(name="a", kind="base", share=0.5, stack=StackConfig(**stack))
    return build_arm(spec, ArmContext(model=ModelConfig(dim=8, id_buckets=1024, hidden=16), slate_size=4,
                                      n_item_dense=1, seed=3))


def _upload(p, item_ids, creators, upload_ts):
    n = len(item_ids)
    p.upload_items(np.asarray(item_ids), np.asarray(creators), np.broadcast_to(np.asarray(upload_ts, np.int64), (n,)),
                   np.zeros(n, np.int64), np.ones((n, 1), np.float32))


def _candidates(p, channel, users, ts):
    rows = p.store.ensure_users(np.asarray(users))
    return channel.retrieve(RequestContext(rows, np.asarray(ts, np.int64), np.random.default_rng(0), p)).rows


def test_a_follower_gets_the_creators_new_item_and_a_non_follower_does_not():
    p = _policy()
    _upload(p, [1, 2], [50, 60], T - 5 * DAY)  # old items of creators 50 and 60
    p.feedback(np.array([7]), np.array([1]), np.array([T - 4 * DAY]), FOLLOW[None])  # user 7 follows creator 50
    _upload(p, [3, 4, 5], [50, 60, 50], [T - DAY, T - DAY, T + DAY])  # new items; 5 comes after the request
    ch = FollowingChannel(k=10, window_s=3 * DAY)
    cand = _candidates(p, ch, [7, 8], [T, T])
    item = lambda rows: set(p.store.items.ids[rows[rows >= 0]].tolist())  # noqa: E731
    assert item(cand[0]) == {3}  # the new item of the followed creator; not the old one, not the future one
    assert item(cand[1]) == set()  # user 8 follows nobody
    # the channel is part of every stack: with fresh and popular off, the follower is served the new item
    p0 = _policy(two_tower_k=1, fresh_k=0, popular_k=0)
    assert p0.channel_names[-1] == "following"
    _upload(p0, [1], [50], T - 5 * DAY)
    p0.feedback(np.array([7]), np.array([1]), np.array([T - 4 * DAY]), FOLLOW[None])
    _upload(p0, [3, 4], [50, 60], T - DAY)
    out = p0.recommend(np.array([7]), np.array([T]), seed=0)
    assert 3 in out.item_ids[0].tolist()


def test_the_k_newest_items_within_the_window():
    p = _policy()
    _upload(p, [1], [50], T - 9 * DAY)
    p.feedback(np.array([7, 7]), np.array([1, 1]), np.array([T - 8 * DAY] * 2), np.stack([FOLLOW, FOLLOW]))
    _upload(p, [10, 11, 12, 13], [50] * 4, [T - 4 * DAY, T - 2 * DAY, T - DAY, T - 3600])
    cand = _candidates(p, FollowingChannel(k=2, window_s=3 * DAY), [7], [T])
    np.testing.assert_array_equal(p.store.items.ids[cand[0]], [13, 12])  # newest first, k of them
    cand = _candidates(p, FollowingChannel(k=10, window_s=3 * DAY), [7], [T])
    assert set(p.store.items.ids[cand[0][cand[0] >= 0]].tolist()) == {11, 12, 13}  # item 10 is too old
    assert _candidates(p, FollowingChannel(k=0, window_s=DAY), [7], [T]).shape == (1, 0)


def test_follows_survive_a_snapshot():
    p = _policy()
    _upload(p, [1], [50], T - 5 * DAY)
    p.feedback(np.array([7]), np.array([1]), np.array([T - 4 * DAY]), FOLLOW[None])
    q = _policy()
    q.restore(p.snapshot())
    _upload(q, [3], [50], T - DAY)
    cand = _candidates(q, FollowingChannel(k=10, window_s=3 * DAY), [7], [T])
    assert q.store.items.ids[cand[0][0]] == 3
