"""Next-User loss: each term against a hand computation, stop-gradient on the auxiliary targets, and a toy
task (the next user follows from the item's category) that training learns."""

import math

import pytest
import torch

from trainers.models.next_user import NextUserConfig, NextUserModel, NextUserOutput, truncate_sequence
from trainers.models.two_tower import TwoTowerConfig, UserTower
from trainers.losses import (
    NextUserLoss,
    NextUserLossConfig,
    auxiliary_loss,
    contrastive_loss,
    exposure_ce_loss,
)


def _bce(z: float, y: float) -> float:
    p = 1 / (1 + math.exp(-z))
    return -(y * math.log(p) + (1 - y) * math.log(1 - p))


# 2 items, d = 2
U_NEXT = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
TARGET = torch.tensor([[1.0, 0.0], [1.0, 1.0]])


def test_contrastive_in_batch_hand_computed():
    # logits = u_next @ target^T / 0.5 = [[2, 2], [0, 2]], positives on the diagonal
    row0 = -math.log(math.exp(2) / (math.exp(2) + math.exp(2)))
    row1 = -math.log(math.exp(2) / (math.exp(0) + math.exp(2)))
    assert contrastive_loss(U_NEXT, TARGET, None, 0.5).item() == pytest.approx((row0 + row1) / 2, rel=1e-6)


def test_contrastive_with_random_negatives_hand_computed():
    rnd = torch.tensor([[0.0, -1.0]])
    # row 0 logits [2, 2, 0]; row 1 logits [0, 2, -2] (tau 0.5)
    row0 = -math.log(math.exp(2) / (math.exp(2) + math.exp(2) + math.exp(0)))
    row1 = -math.log(math.exp(2) / (math.exp(0) + math.exp(2) + math.exp(-2)))
    assert contrastive_loss(U_NEXT, TARGET, rnd, 0.5).item() == pytest.approx((row0 + row1) / 2, rel=1e-6)


def test_exposure_ce_hand_computed():
    exposed = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [5.0, 5.0]],
                            [[0.5, 0.5], [3.0, -1.0], [0.0, 0.0]]])  # (2, 3, 2)
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    mask = torch.tensor([[True, True, False], [True, True, False]])
    # logits: item 0 -> [1, 0, (5 masked)]; item 1 -> [0.5, -1, (0 masked)]
    want = (_bce(1, 1) + _bce(0, 0) + _bce(0.5, 0) + _bce(-1, 1)) / 4
    assert exposure_ce_loss(U_NEXT, exposed, labels, mask).item() == pytest.approx(want, rel=1e-6)
    assert exposure_ce_loss(U_NEXT, exposed, labels.bool(), mask).item() == pytest.approx(want, rel=1e-6)
    want_t = (_bce(2, 1) + _bce(0, 0) + _bce(1, 0) + _bce(-2, 1)) / 4  # temperature 0.5 doubles the logits
    assert exposure_ce_loss(U_NEXT, exposed, labels, mask, 0.5).item() == pytest.approx(want_t, rel=1e-6)
    assert exposure_ce_loss(U_NEXT, exposed, labels, torch.zeros_like(mask)).item() == 0.0


def _aux_case():
    # L = 2, so u_hat has 3 slots; item 0 has 2 users, item 1 has 0 users
    u_hat = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]],
                          [[0.0, 0.0], [9.0, 9.0], [9.0, 9.0]]], requires_grad=True)
    seq = torch.tensor([[[1.0, 1.0], [0.0, 0.0]],
                        [[7.0, 7.0], [7.0, 7.0]]], requires_grad=True)  # item 1's slots are padding
    target = torch.tensor([[2.0, 0.0], [0.0, 3.0]], requires_grad=True)
    return u_hat, seq, torch.tensor([2, 0]), target


def test_auxiliary_hand_computed():
    u_hat, seq, n, target = _aux_case()
    # item 0: j=1 ||(1,1)-(1,0)||^2 = 1; j=2 ||(0,0)-(0,1)||^2 = 1; j=3 (next user) ||(2,0)-(1,1)||^2 = 2 -> 4
    # item 1: only j=1, the next user: ||(0,3)-(0,0)||^2 = 9; slots 2, 3 are ignored
    assert auxiliary_loss(u_hat, seq, n, target).item() == pytest.approx((4 + 9) / 2, rel=1e-6)
    assert auxiliary_loss(u_hat, seq, torch.tensor([5, 0]), target).item() == pytest.approx((4 + 9) / 2)  # clamped


def test_auxiliary_stops_gradient_to_targets():
    u_hat, seq, n, target = _aux_case()
    auxiliary_loss(u_hat, seq, n, target).backward()
    assert seq.grad is None and target.grad is None
    assert u_hat.grad is not None
    # d/du^ of sum ||t - u^||^2 / B = 2 (u^ - t) / B on valid slots, 0 elsewhere
    want = torch.tensor([[[0.0, -1.0], [0.0, 1.0], [-1.0, 1.0]], [[0.0, -3.0], [0.0, 0.0], [0.0, 0.0]]])
    assert torch.allclose(u_hat.grad, want)


def test_auxiliary_checks_slot_count():
    u_hat, seq, n, target = _aux_case()
    with pytest.raises(ValueError):
        auxiliary_loss(u_hat, seq[:, :1], n, target)


def test_total_is_weighted_sum_and_gradients_flow():
    u_hat, seq, n, target = _aux_case()
    u_next = U_NEXT.clone().requires_grad_(True)
    exposed = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    labels, mask = torch.tensor([[1.0], [0.0]]), torch.ones(2, 1, dtype=torch.bool)
    loss = NextUserLoss(NextUserLossConfig(l1=1.0, l2=2.0, l3=0.5, tau=0.5))
    got = loss(NextUserOutput(u_hat, u_next), target, None, exposed, labels, mask, seq, n)
    assert set(got) == {"total", "contrastive", "ce", "aux"}
    assert got["contrastive"].item() == pytest.approx(contrastive_loss(U_NEXT, target, None, 0.5).item())
    assert got["ce"].item() == pytest.approx((_bce(1, 1) + _bce(1, 0)) / 2, rel=1e-6)
    assert got["aux"].item() == pytest.approx(6.5, rel=1e-6)
    want = got["contrastive"] + 2.0 * got["ce"] + 0.5 * got["aux"]
    assert got["total"].item() == pytest.approx(want.item(), rel=1e-6)
    got["total"].backward()
    assert u_next.grad is not None and u_hat.grad is not None
    assert target.grad is not None  # the next user's tower learns through the contrastive term
    assert seq.grad is None
    no_ce = loss(NextUserOutput(u_hat, u_next), target, None, None, None, None, seq, n)
    assert no_ce["ce"].item() == 0.0


# ---------------------------------------------------------------------------------- toy training

N_CAT, PER_CAT, L, D = 4, 6, 6, 16


def _toy(g: torch.Generator, B: int) -> dict[str, torch.Tensor]:
    """Category c's users are c*PER_CAT + (0..PER_CAT-1); an item's sequence and next user come from its category."""
    cat = torch.randint(0, N_CAT, (B,), generator=g)
    n = torch.randint(0, L + 1, (B,), generator=g)
    seq = cat[:, None] * PER_CAT + torch.randint(0, PER_CAT, (B, L), generator=g)
    seq = torch.where(torch.arange(L)[None, :] < n[:, None], seq, torch.full_like(seq, -1))
    nxt = cat * PER_CAT + torch.randint(0, PER_CAT, (B,), generator=g)
    other = (cat + torch.randint(1, N_CAT, (B,), generator=g)) % N_CAT * PER_CAT + torch.randint(0, PER_CAT, (B,), generator=g)
    return {
        "item_id": torch.randint(10_000, 20_000, (B,), generator=g), "category": cat,
        "creator_id": torch.randint(0, 50, (B,), generator=g), "item_dense": torch.rand(B, 1, generator=g),
        "seq_users": seq, "seq_len": n, "next_user": nxt,
        "exposed": torch.stack([nxt, other], 1), "exposed_labels": torch.tensor([[1.0, 0.0]]).expand(B, 2),
    }


def _step_loss(model, tower, loss_fn, b, g):
    emb = lambda ids: tower(ids, ids.new_zeros(*ids.shape, 0, dtype=torch.float))  # noqa: E731 (ids only)
    out = model(b)
    users, n = model.visible_sequence(b)  # exactly the users the model read
    rnd = emb(torch.randint(0, N_CAT * PER_CAT, (8,), generator=g))
    exposed = emb(b["exposed"])
    return loss_fn(out, emb(b["next_user"]), rnd, exposed, b["exposed_labels"],
                   torch.ones_like(b["exposed"], dtype=torch.bool), emb(users.clamp(min=0)), n)


def test_toy_task_training_reduces_loss_and_retrieves_the_category():
    torch.manual_seed(0)
    model = NextUserModel(NextUserConfig(dim=D, heads=2, layers=1, ff=32, seq_len=L, id_buckets=512, n_categories=16))
    tower = UserTower(TwoTowerConfig(dim=D, id_buckets=512, n_user_dense=0, hidden=32))
    loss_fn = NextUserLoss(NextUserLossConfig(n_random_negatives=8))
    opt = torch.optim.Adam([*model.parameters(), *tower.parameters()], lr=3e-3)
    g_eval = torch.Generator().manual_seed(123)
    eval_batch = _toy(g_eval, 64)

    def evaluate():
        with torch.no_grad():
            return _step_loss(model, tower, loss_fn, eval_batch, torch.Generator().manual_seed(7))

    before = evaluate()
    g = torch.Generator().manual_seed(1)
    for _ in range(200):
        losses = _step_loss(model, tower, loss_fn, _toy(g, 32), g)
        opt.zero_grad()
        losses["total"].backward()
        opt.step()
    after = evaluate()
    assert after["total"] < 0.8 * before["total"], (before, after)
    assert after["contrastive"] < before["contrastive"] - 0.5
    assert after["ce"] < before["ce"] and after["aux"] < before["aux"]
    # retrieval: the best-scoring user for each eval item belongs to the item's category (chance 1/4)
    with torch.no_grad():
        all_users = torch.arange(N_CAT * PER_CAT)
        scores = model(eval_batch).u_next @ tower(all_users, torch.zeros(len(all_users), 0)).T  # (B, U)
    hit = (scores.argmax(1) // PER_CAT == eval_batch["category"]).float().mean().item()
    assert hit > 0.9, hit
