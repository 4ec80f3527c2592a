"""DualRecTask: random-negative softmax, progressive AUC, SA/EF variants, weights round trip, learning a signal."""

import copy

import numpy as np
import pytest
import torch

torch.set_num_threads(1)

from trainers.tasks.dualrec import DualRecTask
from trainers.weights import unpack_weights
from trainers.metrics import auc
from trainers.losses import sampled_softmax
from trainers.models.creator_ranker import CreatorRanker, CreatorRankerConfig
from trainers.models.two_tower import TwoTower, TwoTowerConfig

TT = TwoTowerConfig(dim=8, id_buckets=512, hidden=16)
RK = CreatorRankerConfig(dim=4, id_buckets=512, hidden=16)


def test_auc_by_hand():
    # positives 0.35, 0.8 vs negatives 0.1, 0.4: pairs won 3 of 4
    assert auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == pytest.approx(0.75)
    assert np.isnan(auc(np.array([0.1, 0.2]), np.array([1, 1])))


def test_sampled_softmax_by_hand_and_accidental_hits_masked():
    q = torch.tensor([[1.0, 0.0]])
    pos = torch.tensor([[1.0, 0.0]])
    neg = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]])  # the second negative is the positive itself
    # logits / 1: [1, 0, 1] -> -log(e / (e + 1 + e))
    full = sampled_softmax(q, pos, neg, 1.0)
    assert full.item() == pytest.approx(-np.log(np.e / (2 * np.e + 1)))
    masked = sampled_softmax(q, pos, neg, 1.0, torch.tensor([[True, False]]))
    assert masked.item() == pytest.approx(-np.log(np.e / (np.e + 1)))


def _batch(n, rng, signal=True):
    users = rng.integers(0, 200, n)
    items = rng.integers(0, 300, n)
    cat = items % 4
    # likes: category 0 is liked far more often (a main effect), users with a high first dense feature too
    dense = rng.random((n, 3)).astype(np.float32)
    p = np.where(cat == 0, 0.6, 0.05) + 0.3 * dense[:, 0]
    like = rng.random(n) < (p if signal else 0.25)
    labels = np.zeros((n, 5), bool)
    labels[:, 0] = like
    labels[:, 4] = like | (rng.random(n) < 0.2)
    return {
        "user_id": users.astype(np.int64), "item_id": items.astype(np.int64), "creator_id": (items // 10).astype(np.int64),
        "category": cat.astype(np.int64), "user_dense": dense,
        "item_dense": np.ones((n, 1), np.float32), "pair_dense": np.zeros((n, 3), np.float32), "labels": labels,
        "dr_recent": np.full((n, 10), -1, np.int64), "dr_sim": np.zeros((n, 2), np.float32),
    }


def test_auc_table_trains_four_variants_and_reports_progressive_auc():
    task = DualRecTask(TT, RK, sa_ef=True, lr=3e-3, batch_size=128, seed=0, negatives=8, auc_table=True)
    assert sorted(task.rankers) == ["sa0_ef0", "sa0_ef1", "sa1_ef0", "sa1_ef1"] and task.main == "sa1_ef1"
    st = task.train(_batch(600, np.random.default_rng(0)), tick_seed=1)
    for v in task.rankers:
        assert np.isfinite(st[f"auc.{v}.like"]) and np.isfinite(st[f"ranker_loss.{v}"])
    assert np.isfinite(st["two_tower_loss"]) and st["samples"] == 600
    # a batch without the DualRec features (another arm's) is skipped, not an error
    assert DualRecTask(TT, RK, sa_ef=False, lr=1e-3, batch_size=64, seed=0).train({"user_id": np.zeros(0)}, 0) == {"samples": 0.0}


def test_the_ranker_learns_a_planted_preference():
    rng = np.random.default_rng(1)
    task = DualRecTask(TT, RK, sa_ef=True, lr=1e-2, batch_size=128, seed=0, negatives=8)
    aucs = [task.train(_batch(1000, rng), tick_seed=t)["auc.sa1_ef1.like"] for t in range(6)]
    assert aucs[0] < 0.65 < 0.75 < aucs[-1], aucs  # progressive AUC: prediction before training on each tick


def test_weights_round_trip_into_serving_models():
    task = DualRecTask(TT, RK, sa_ef=False, lr=1e-3, batch_size=64, seed=0)
    tt, rk = unpack_weights(task.weights(), "tt", "rank")
    m_tt, m_rk = TwoTower(TT), CreatorRanker(CreatorRankerConfig(**{**RK.__dict__, "extra_features": False}))
    m_tt.load_state_dict(tt)
    m_rk.load_state_dict(rk)
    for k, v in m_rk.state_dict().items():
        torch.testing.assert_close(v, task.rankers["sa0_ef0"].state_dict()[k])


def test_state_round_trip_continues_identically():
    rng = np.random.default_rng(2)
    b1, b2 = _batch(300, rng), _batch(300, rng)
    a = DualRecTask(TT, RK, sa_ef=True, lr=1e-3, batch_size=64, seed=0)
    a.train(b1, 1)
    b = DualRecTask(TT, RK, sa_ef=True, lr=1e-3, batch_size=64, seed=5)
    b.load_state(copy.deepcopy(a.state()))  # (the learner ships it as bytes; a deep copy here)
    sa, sb = a.train(b2, 2), b.train(b2, 2)
    assert sa.keys() == sb.keys()
    np.testing.assert_array_equal(np.array(list(sa.values())), np.array(list(sb.values())))
