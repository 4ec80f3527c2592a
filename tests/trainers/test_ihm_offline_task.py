"""The retrieval task: in-batch sampled softmax with logQ correction by hand, and each model's training step."""

from __future__ import annotations

import math

import pytest
import torch

from trainers.losses import sampled_softmax_logq
from trainers.tasks.ihm_offline import RETRIEVAL_MODELS, RetrievalSizes
from trainers.models.ihm import IHMConfig
from trainers.models.sasrec import SASRecConfig


def test_sampled_softmax_logq_by_hand():
    u = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    v = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    item = torch.tensor([5, 6, 5])  # rows 0 and 2 are the same item: accidental hits are masked
    log_q = torch.log(torch.tensor([0.5, 0.25, 0.5]))
    tau = 0.5
    got = sampled_softmax_logq(u, v, item, log_q, tau)
    # row 0: logits [1/0.5 - ln .5, 0 - ln .25, masked] = [2 + .6931, 1.3863]
    l0 = -(2 + math.log(2)) + math.log(math.exp(2 + math.log(2)) + math.exp(math.log(4)))
    # row 1: [0 + ln 2, 2 + ln 4, 0 + ln 2]
    l1 = -(2 + math.log(4)) + math.log(2 * math.exp(math.log(2)) + math.exp(2 + math.log(4)))
    # row 2: [masked, ln 4, 2 + ln 2]
    l2 = l0
    assert got.item() == pytest.approx((l0 + l1 + l2) / 3, abs=1e-6)


def _batch(B=8, M=4, L=5):
    g = torch.Generator().manual_seed(0)
    seq_n = torch.randint(0, L + 1, (B,), generator=g)
    hist_n = torch.randint(0, M + 1, (B,), generator=g)
    rows = torch.randint(0, 20, (B,), generator=g)
    return {
        "target_seq": torch.arange(B), "target_pos": seq_n,
        "item_row": rows, "item_id": rows + 100, "creator_id": rows // 4, "category": rows % 3,
        "item_dense": torch.rand(B, 2, generator=g),
        "hist_users": torch.randint(0, 50, (B, M), generator=g), "hist_len": hist_n,
        "seq": {"item_id": torch.randint(100, 120, (B, L), generator=g), "creator_id": torch.zeros(B, L, dtype=torch.long),
                "category": torch.zeros(B, L, dtype=torch.long), "item_dense": torch.rand(B, L, 2, generator=g),
                "seq_len": seq_n},
    }


@pytest.mark.parametrize("name", sorted(RETRIEVAL_MODELS))
def test_each_model_trains_down_on_a_fixed_batch(name):
    sizes = RetrievalSizes(ihm=IHMConfig(dim=8, heads=2, max_history=4, id_buckets=512, n_categories=8, n_item_dense=2),
                           sasrec=SASRecConfig(dim=8, layers=1, ff=16, dropout=0.0, seq_len=5), lr=1e-2)
    task = RETRIEVAL_MODELS[name](sizes, torch.full((20,), math.log(1 / 20)))
    assert task.name == name
    b = _batch()
    first = task.step(b)
    for _ in range(30):
        last = task.step(b)
    assert last < first
    assert task.items(b).shape == (8, 8) and task.users(b["seq"]).shape == (8, 8)


def test_transductive_item_tower_ignores_history_and_ihm_does_not():
    sizes = RetrievalSizes(ihm=IHMConfig(dim=8, id_buckets=512, n_categories=8, n_item_dense=2),
                           sasrec=SASRecConfig(dim=8, layers=1, seq_len=5))
    b = _batch()
    b2 = dict(b, hist_len=torch.full_like(b["hist_len"], 4))
    tr = RETRIEVAL_MODELS["transductive"](sizes, torch.zeros(20))
    ihm = RETRIEVAL_MODELS["ihm"](sizes, torch.zeros(20))
    assert torch.equal(tr.items(b), tr.items(b2))
    assert not torch.allclose(ihm.items(b), ihm.items(b2))
