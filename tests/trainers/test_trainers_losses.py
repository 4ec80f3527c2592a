"""Loss objects: in-batch sampled softmax and the multi-task BCE, against hand computations."""

import math

import pytest
import torch

from trainers.losses import in_batch_softmax, multitask_bce


def test_in_batch_softmax_hand_computed():
    u = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    v = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    # logits = u v^T / 0.5 = [[2, 2], [0, 2]]; targets on the diagonal
    row0 = -math.log(math.exp(2) / (math.exp(2) + math.exp(2)))  # = log 2
    row1 = -math.log(math.exp(2) / (math.exp(0) + math.exp(2)))  # = log(1 + e^-2)
    got = in_batch_softmax(u, v, temperature=0.5)
    assert got.item() == pytest.approx((row0 + row1) / 2, rel=1e-6)
    assert got.item() == pytest.approx((math.log(2) + math.log(1 + math.exp(-2))) / 2, rel=1e-6)


def test_in_batch_softmax_temperature_and_gradient():
    u = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    v = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # perfectly separated: logits [[1/t, 0], [0, 1/t]] -> loss log(1 + e^{-1/t})
    for t in (1.0, 0.1):
        assert in_batch_softmax(u, v, t).item() == pytest.approx(math.log(1 + math.exp(-1 / t)), rel=1e-5, abs=1e-6)
    in_batch_softmax(u, v, 1.0).backward()
    assert u.grad is not None and torch.isfinite(u.grad).all()


def _bce(z: float, y: float) -> float:
    p = 1 / (1 + math.exp(-z))
    return -(y * math.log(p) + (1 - y) * math.log(1 - p))


def test_multitask_bce_is_sum_of_per_task_means():
    logits = torch.tensor([[0.0, 2.0], [-1.0, 0.5]])
    labels = torch.tensor([[1, 0], [0, 1]])
    task0 = (_bce(0.0, 1) + _bce(-1.0, 0)) / 2
    task1 = (_bce(2.0, 0) + _bce(0.5, 1)) / 2
    assert multitask_bce(logits, labels).item() == pytest.approx(task0 + task1, rel=1e-6)
    w = torch.tensor([2.0, 0.5])
    assert multitask_bce(logits, labels, w).item() == pytest.approx(2.0 * task0 + 0.5 * task1, rel=1e-6)


def test_multitask_bce_accepts_bool_labels():
    logits = torch.zeros(3, 5)
    labels = torch.zeros(3, 5, dtype=torch.bool)
    assert multitask_bce(logits, labels).item() == pytest.approx(5 * math.log(2), rel=1e-6)
