"""The base models' optimisers (trainers/optim.py): lazy Adam against dense Adam on hand-picked lookups, and a
learner trained with it checkpoints and resumes exactly."""

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from torch import nn

from simulator.core.config import TrainConfig
from trainers.compact import SparseRows, compact_torch, expand
from trainers.learner import OnlineLearner
from trainers.models.ranker import RankerConfig
from trainers.models.two_tower import HashEmbedding, TwoTowerConfig
from trainers.optim import LazyAdam, make_optimizer

BUCKETS = 8192  # above compact.MIN_ROWS: the tables' moments are stored as their non-zero rows


class Toy(nn.Module):
    """One hashed-id table and one dense layer: a lookup's loss reaches both."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.table = HashEmbedding(BUCKETS, 4)
        self.head = nn.Linear(4, 1)

    def forward(self, ids):
        return self.head(self.table(ids)).sum()


def _rows(ids: list[int]) -> torch.Tensor:
    return torch.remainder(torch.tensor(ids) * 2_654_435_761, BUCKETS)


def _step(model: Toy, optimizer, ids: list[int]) -> None:
    optimizer.zero_grad()
    model(torch.tensor(ids)).backward()
    optimizer.step()


def _two_steps(kind: str) -> tuple[Toy, torch.Tensor, torch.Tensor]:
    """Step 1 looks up ids 1, 2; step 2 looks up 3 only. Returns the model and its table after each step."""
    model = Toy()
    optimizer = make_optimizer(model, lr=0.1, kind=kind)
    _step(model, optimizer, [1, 2])
    after_one = model.table.emb.weight.detach().clone()
    _step(model, optimizer, [3])
    return model, after_one, model.table.emb.weight.detach().clone()


def test_first_step_equals_dense_adam():
    """Both start from zero moments: a row without gradient has a zero update in Adam too, so one step is the same."""
    _, dense_one, _ = _two_steps("adam")
    _, lazy_one, _ = _two_steps("lazy_adam")
    torch.testing.assert_close(lazy_one, dense_one, rtol=0, atol=1e-6)  # float rounding: a step is 0.1


def test_lazy_adam_moves_only_looked_up_rows():
    """Step 2 looks up id 3 only: under dense Adam rows 1 and 2 keep moving on their moments, under lazy Adam they
    stay; row 3 moves the same under both (its moments were zero), and rows never looked up stay at their init."""
    initial = Toy().table.emb.weight.detach().clone()
    _, dense_one, dense_two = _two_steps("adam")
    _, lazy_one, lazy_two = _two_steps("lazy_adam")
    old, new = _rows([1, 2]), _rows([3])
    assert (dense_two[old] != dense_one[old]).all()
    torch.testing.assert_close(lazy_two[old], lazy_one[old], rtol=0, atol=0)
    assert (lazy_two[new] != lazy_one[new]).all()
    torch.testing.assert_close(lazy_two[new], dense_two[new], rtol=0, atol=1e-6)  # float rounding: a step is 0.1
    others = torch.ones(BUCKETS, dtype=torch.bool)
    others[torch.cat([old, new])] = False
    torch.testing.assert_close(lazy_two[others], initial[others], rtol=0, atol=0)


def test_dense_parameters_keep_dense_adam():
    """Only the tables go lazy: the linear head gets the same update as under dense Adam."""
    dense, _, _ = _two_steps("adam")
    lazy, _, _ = _two_steps("lazy_adam")
    for name, value in dense.head.state_dict().items():  # atol: float rounding, where a step is 0.1
        torch.testing.assert_close(lazy.head.state_dict()[name], value, rtol=0, atol=1e-6)


def test_lazy_state_compacts_to_looked_up_rows_and_round_trips():
    model = Toy()
    optimizer = make_optimizer(model, lr=0.1, kind="lazy_adam")
    _step(model, optimizer, [1, 2])
    compact = compact_torch(optimizer)
    moment = compact["sparse"]["state"][0]["exp_avg"]
    assert isinstance(moment, SparseRows) and sorted(moment.rows) == sorted(_rows([1, 2]).tolist())
    again = LazyAdam(Toy(), lr=0.1)
    again.load_state_dict(expand(compact))
    for part in ("sparse", "dense"):
        for index, slots in optimizer.state_dict()[part]["state"].items():
            for name, value in slots.items():
                torch.testing.assert_close(again.state_dict()[part]["state"][index][name], value, rtol=0, atol=0)


def test_lazy_adam_refuses_a_dense_adams_state():
    dense = make_optimizer(Toy(), lr=0.1, kind="adam")
    with pytest.raises(ValueError, match="lazy Adam's state"):
        LazyAdam(Toy(), lr=0.1).load_state_dict(dense.state_dict())


def test_unknown_optimizer_is_named():
    with pytest.raises(ValueError, match="unknown optimizer 'sgd'"):
        make_optimizer(Toy(), lr=0.1, kind="sgd")
    with pytest.raises(ValidationError, match="optimizer"):
        TrainConfig(optimizer="sgd")


def _learner(seed: int) -> OnlineLearner:
    return OnlineLearner(TwoTowerConfig(dim=8, id_buckets=BUCKETS, hidden=16), RankerConfig(dim=8, id_buckets=BUCKETS,
                         hidden=16), lr=1e-2, batch_size=64, temperature=0.1, epochs=1, seed=seed,
                         optimizer="lazy_adam")


def _batch(seed: int, n: int = 256) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"user_id": rng.integers(0, 64, n), "item_id": rng.integers(0, 128, n), "creator_id": rng.integers(0, 16, n),
            "category": rng.integers(0, 8, n), "user_dense": rng.random((n, 3)).astype(np.float32),
            "item_dense": rng.random((n, 1)).astype(np.float32), "pair_dense": rng.random((n, 3)).astype(np.float32),
            "labels": rng.random((n, 5)) < 0.4}


def test_lazy_learner_resumes_identically():
    """A learner with lazy Adam, stopped after 2 ticks and restored into a fresh one, trains tick 3 exactly as the
    uninterrupted learner: the checkpoint holds the lazy moments of every row looked up."""
    a = _learner(seed=0)
    for tick in range(2):
        a.train_tick(_batch(tick), tick_seed=tick)
    b = _learner(seed=99)
    b.load_state_bytes(a.state_bytes())
    stats_a, stats_b = a.train_tick(_batch(2), tick_seed=2), b.train_tick(_batch(2), tick_seed=2)
    assert stats_a == stats_b
    for module in ("two_tower", "ranker"):
        for key, value in getattr(a, module).state_dict().items():
            torch.testing.assert_close(getattr(b, module).state_dict()[key], value, rtol=0, atol=0, msg=key)
