"""The positive control: the truth's candidate users are scored and picked right, and the arm matches them
under DualRec's available-user store (cap N, activity) exactly as DualRec would."""

import numpy as np
import pytest
import torch

from serving.arms import ARM_KINDS, build_arm

from trainers.arm_context import ArmContext
from simulator.core.config import ArmSpec, DualRecSpec, ModelConfig
from simulator.world.oracle_match import oracle_candidates
from simulator.world.response import LatentFactorResponse

torch.set_num_threads(1)
DAY = 86_400
T0 = 100 * DAY
S = 4


def test_oracle_candidates_are_the_users_with_the_highest_true_score():
    # 1-d truth: affinity = user value * item value; like weight 1, view weight 0 -> order by p(like)
    users, items = np.arange(10, 16), np.array([7, 8])
    truth = LatentFactorResponse(users, np.linspace(-1, 1, 6)[:, None], items, np.array([[1.0], [-1.0]]),
                                 np.zeros(2, np.int64), bias=np.zeros(5), scale=np.ones(5))
    ids, scores = oracle_candidates(truth, items, users, {"like": 1.0}, k=3)
    assert ids.tolist() == [[15, 14, 13], [10, 11, 12]]  # item 7 likes high users, item 8 low ones
    np.testing.assert_allclose(scores[0], 1 / (1 + np.exp(-np.linspace(-1, 1, 6)[[5, 4, 3]])), rtol=1e-6)
    assert oracle_candidates(truth, items, users[:2], {"like": 1.0}, k=3)[0].shape == (2, 2)  # k <= users


def _policy(**dr):
    spec = ArmSpec(name="om", kind="oracle_match", share=0.5,
                   dualrec=DualRecSpec(**{"targets": 3, "cap": 2, **dr}))
    ctx = ArmContext(model=ModelConfig(dim=8, id_buckets=1024, hidden=16), slate_size=S, n_item_dense=1, seed=3)
    return build_arm(spec, ctx)


def _upload(p, ids, ts, oracle=None):
    ids = np.asarray(ids, np.int64)
    n = len(ids)
    p.upload_items(ids, np.ones(n, np.int64), np.full(n, ts, np.int64), ids % 3, np.ones((n, 1), np.float32),
                   oracle=oracle)
    return p.last_targets


def test_oracle_match_picks_the_truths_best_available_users_under_the_cap():
    assert ARM_KINDS["oracle_match"].oracle and not ARM_KINDS["dualrec"].oracle
    p = _policy()
    assert p.channel_names[0] == "oracle_match"
    users = np.arange(1000, 1008)
    _upload(p, np.arange(20), T0 - DAY, oracle=(np.full((20, 1), -1), np.zeros((20, 1))))
    for u in users:  # day 0: every user visits once
        sl = p.recommend(np.array([u]), np.array([T0 + 100]), seed=0)
        p.feedback(np.full(S, u), sl.item_ids[0], np.full(S, T0 + 100), np.zeros((S, 5), bool))
    p.end_day(T0 + DAY)
    ch = p.channels[0]
    ch.store.set_active(np.isin(p.store.users.ids, users[:6]))  # users 1006, 1007 predicted inactive
    # candidates best first: an unknown user (999), an inactive one (1007), then 1000, 1001, ...
    cand = np.array([[999, 1007, 1000, 1001, 1002, 1003]])
    score = np.array([[0.9, 0.8, 0.7, 0.6, 0.5, 0.4]])
    assert _upload(p, [100], T0 + DAY + 10, oracle=(cand, score)) == {100: [1000, 1001, 1002]}
    assert _upload(p, [101], T0 + DAY + 20, oracle=(cand, score)) == {101: [1000, 1001, 1002]}
    # N = 2: 1000-1002 are full, the next best available users get the third item
    assert _upload(p, [102], T0 + DAY + 30, oracle=(cand, score)) == {102: [1003]}
    with pytest.raises(ValueError, match="without the truth's candidates"):
        _upload(p, [103], T0 + DAY + 40)
