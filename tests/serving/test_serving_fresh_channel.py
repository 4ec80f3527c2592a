"""The fresh channel: uniform over the window by default; with a popularity power, established creators' new items
are explored first (user-side retrieval "favours a few", DualRec Fig. 8)."""

import numpy as np

from serving.arms import build_arm

from trainers.arm_context import ArmContext
from serving.channels.basic import FreshChannel
from serving.channels.base import RequestContext
from simulator.core.config import ArmSpec, ModelConfig

DAY = 86_400
T = 10 * DAY
LIKE = np.array([1, 0, 0, 0, 0], bool)


def _policy():
    spec = ArmSpec(name="a", kind="base", share=0.5)
    return build_arm(spec, ArmContext(model=ModelConfig(dim=8, id_buckets=1024, hidden=16), slate_size=4,
                                      n_item_dense=1, seed=3))


def _retrieve(k: float, power: float) -> tuple[np.ndarray, object]:
    p = _policy()
    # an old item of creator 1 with 99 likes; creator 2 has none
    p.upload_items(np.array([1]), np.array([1]), np.array([T - 5 * DAY]), np.zeros(1, np.int64), np.ones((1, 1), np.float32))
    users = np.arange(100, 199)
    p.feedback(users, np.ones(99, np.int64), np.full(99, T - 4 * DAY), np.tile(LIKE, (99, 1)))
    # new items: 10 and 11 of creator 1, 20 and 21 of creator 2, all in the window; 30 is too old
    p.upload_items(np.array([10, 11, 20, 21, 30]), np.array([1, 1, 2, 2, 2]),
                   np.array([T - 3600, T - 7200, T - 3600, T - 7200, T - 3 * DAY]), np.zeros(5, np.int64),
                   np.ones((5, 1), np.float32))
    rows = p.store.ensure_users(np.arange(1000, 3000))
    ch = FreshChannel(k=k, window_s=DAY, popularity_power=power)
    return ch.retrieve(RequestContext(rows, np.full(len(rows), T), np.random.default_rng(0), p)).rows, p


def _counts(power: float) -> dict[int, int]:
    cand, p = _retrieve(4, power)
    ids, n = np.unique(p.store.items.ids[cand[cand >= 0]], return_counts=True)
    return dict(zip(ids.tolist(), n.tolist()))


def test_uniform_by_default_and_weighted_by_creator_popularity_with_a_power():
    uniform = _counts(0.0)
    assert set(uniform) == {10, 11, 20, 21}  # only items inside the window
    assert min(uniform.values()) > 0.8 * max(uniform.values())
    weighted = _counts(1.0)
    assert set(weighted) <= {10, 11, 20, 21}
    # weight 1 + 99 = 100 for creator 1's items against 1 for creator 2's: about 1% of draws go to creator 2
    share_new_creator = (weighted.get(20, 0) + weighted.get(21, 0)) / sum(weighted.values())
    assert 0.002 < share_new_creator < 0.03, weighted


def test_a_fractional_k_adds_one_candidate_to_that_share_of_requests():
    cand, _ = _retrieve(1.25, 0.0)
    assert cand.shape == (2000, 2)
    assert (cand[:, 0] >= 0).all()  # the whole part: every request
    extra = (cand[:, 1] >= 0).mean()
    assert 0.21 < extra < 0.29, extra  # 2000 requests: 0.25 +- 0.04 is over 4 standard errors
    cand, _ = _retrieve(0.1, 1.0)
    assert cand.shape == (2000, 1) and 0.07 < (cand >= 0).mean() < 0.13
    assert _retrieve(0, 1.0)[0].shape == (2000, 0)
