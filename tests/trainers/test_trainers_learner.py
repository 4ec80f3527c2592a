"""OnlineLearner: the ranker learns a toy task, state round trips continue training identically, weights are copies."""

import numpy as np
import pytest
import torch

from trainers.learner import BATCH_KEYS, OnlineLearner, concat_batches
from trainers.models.ranker import RankerConfig
from trainers.models.two_tower import TwoTowerConfig

N = 256


def _learner(seed: int = 0, lr: float = 1e-2) -> OnlineLearner:
    tt = TwoTowerConfig(dim=8, id_buckets=256, n_item_dense=1, hidden=16)
    rk = RankerConfig(dim=8, id_buckets=256, n_item_dense=1, hidden=16)
    return OnlineLearner(tt, rk, lr=lr, batch_size=64, temperature=0.1, epochs=1, seed=seed)


def _toy_batch() -> dict[str, np.ndarray]:
    """A fixed, learnable batch: an item is liked iff its id is even, viewed iff its category is 1."""
    rng = np.random.default_rng(0)
    item = rng.integers(0, 16, N).astype(np.int64)
    cat = (item % 4).astype(np.int64)
    labels = np.zeros((N, 5), bool)
    labels[:, 0] = item % 2 == 0
    labels[:, 4] = cat == 1
    return {
        "user_id": rng.integers(0, 32, N).astype(np.int64), "item_id": item, "creator_id": item // 4,
        "category": cat, "user_dense": rng.random((N, 3)).astype(np.float32),
        "item_dense": np.ones((N, 1), np.float32), "pair_dense": rng.random((N, 3)).astype(np.float32),
        "labels": labels,
    }


def test_train_tick_reduces_ranker_loss():
    learner, batch = _learner(), _toy_batch()
    losses = [learner.train_tick(batch, tick_seed=t)["ranker_loss"] for t in range(40)]
    assert losses[0] > 1.0  # 5 tasks near log 2 each at the start (minus the easy all-zero ones)
    assert losses[-1] < 0.3 * losses[0], losses
    assert learner.version == 40 and learner.samples_seen == 40 * N


def test_train_tick_reports_and_handles_empty():
    learner = _learner()
    st = learner.train_tick(_toy_batch(), tick_seed=0)
    assert set(st) == {"ranker_loss", "two_tower_loss", "samples", "ranker_auc_like"}  # AUC: progressive validation
    assert st["samples"] == N and np.isfinite(st["two_tower_loss"])
    st = learner.train_tick({}, tick_seed=1)
    assert st["samples"] == 0 and np.isnan(st["ranker_loss"])
    assert learner.version == 2


def test_state_bytes_round_trip_continues_identically():
    batch = _toy_batch()
    a = _learner(seed=0)
    for t in range(3):
        a.train_tick(batch, tick_seed=t)
    b = _learner(seed=123)  # different init, overwritten by the restore
    b.load_state_bytes(a.state_bytes())
    assert b.version == a.version and b.samples_seen == a.samples_seen
    sa = a.train_tick(batch, tick_seed=99)
    sb = b.train_tick(batch, tick_seed=99)
    assert sa == sb
    wa, wb = a.weights(), b.weights()
    for part in ("two_tower", "ranker"):
        assert wa[part].keys() == wb[part].keys()
        for k in wa[part]:
            np.testing.assert_array_equal(wa[part][k], wb[part][k])


def test_restore_without_optimiser_state_would_differ():
    """Sanity check that the round-trip test can fail: a learner with only the model weights diverges."""
    batch = _toy_batch()
    a = _learner(seed=0)
    for t in range(3):
        a.train_tick(batch, tick_seed=t)
    b = _learner(seed=123)
    b.two_tower.load_state_dict(a.two_tower.state_dict())
    b.ranker.load_state_dict(a.ranker.state_dict())
    assert a.train_tick(batch, tick_seed=99) != b.train_tick(batch, tick_seed=99)


def test_weights_are_numpy_copies():
    learner = _learner()
    w = learner.weights()
    assert set(w) == {"two_tower", "ranker"}
    key = "heads.bias"
    assert isinstance(w["ranker"][key], np.ndarray)
    before = learner.ranker.state_dict()[key].clone()
    for part in w.values():
        for arr in part.values():
            arr[...] = 42.0
    assert torch.equal(learner.ranker.state_dict()[key], before)
    assert not (learner.weights()["two_tower"]["user.net.0.weight"] == 42.0).any()


def test_concat_batches_skips_empty():
    b = _toy_batch()
    empty = {k: v[:0] for k, v in b.items()}
    out = concat_batches([empty, b, b])
    assert set(out) == set(BATCH_KEYS)
    assert len(out["user_id"]) == 2 * N
    assert concat_batches([empty]) == {}
