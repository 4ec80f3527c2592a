"""DualRec's creator-side ranker: sample augmentation drops the item id, extra features pool recent users."""

import numpy as np
import torch

from trainers.models.creator_ranker import CreatorRanker, CreatorRankerConfig


def _batch(n=4, item_id=None, recent=None):
    g = torch.Generator().manual_seed(0)
    return {
        "user_id": torch.arange(n) + 100, "user_dense": torch.rand(n, 3, generator=g),
        "item_id": torch.arange(n) + 7 if item_id is None else item_id, "creator_id": torch.full((n,), 3),
        "category": torch.full((n,), 2), "item_dense": torch.rand(n, 1, generator=g),
        "recent_users": torch.full((n, 4), -1) if recent is None else recent,
        "sim_dense": torch.rand(n, 2, generator=g),
    }


def _model(ef=True):
    torch.manual_seed(0)
    return CreatorRanker(CreatorRankerConfig(dim=4, id_buckets=512, hidden=8, extra_features=ef)).eval()


@torch.no_grad()
def test_dropping_the_item_id_removes_its_influence():
    m = _model()
    a, b = _batch(item_id=torch.tensor([1, 2, 3, 4])), _batch(item_id=torch.tensor([9, 8, 7, 6]))
    assert not torch.allclose(m(a), m(b))  # the id matters ...
    a["drop_item_id"] = b["drop_item_id"] = torch.ones(4, dtype=torch.bool)
    torch.testing.assert_close(m(a), m(b))  # ... unless it is dropped (the SA copy of a sample)


@torch.no_grad()
def test_recent_users_are_mean_pooled_and_padding_is_ignored():
    m = _model()
    r1 = torch.tensor([[5, 6, -1, -1]] * 4)
    r2 = torch.tensor([[6, -1, 5, -1]] * 4)  # same users, other order and padding positions
    torch.testing.assert_close(m(_batch(recent=r1)), m(_batch(recent=r2)))
    assert not torch.allclose(m(_batch(recent=r1)), m(_batch(recent=torch.tensor([[5, -1, -1, -1]] * 4))))


@torch.no_grad()
def test_without_extra_features_the_ef_inputs_are_ignored():
    m = _model(ef=False)
    b1, b2 = _batch(), _batch(recent=torch.tensor([[1, 2, 3, 4]] * 4))
    b2["sim_dense"] = b2["sim_dense"] + 5
    torch.testing.assert_close(m(b1), m(b2))


@torch.no_grad()
def test_pair_logits_match_forward_on_the_diagonal():
    m = _model()
    b = _batch()
    u = m.user(b["user_id"], b["user_dense"])
    v = m.item(b)
    pairs = m.pair_logits(v, u)  # (I, U, K)
    assert pairs.shape == (4, 4, 5)
    torch.testing.assert_close(pairs[np.arange(4), np.arange(4)], m(b))
