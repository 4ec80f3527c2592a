"""Gradients by rows (trainers/models/two_tower.RowLookup, trainers/optim.RowGradAdam): the hashed-id tables' dense
gradient written in place from the rows looked up equals nn.Embedding's dense backward bit for bit, so every weight
of every learner is the same as with torch.optim.Adam."""

import polars as pl
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trainers.models.two_tower import HashEmbedding
from trainers.optim import LazyAdam, RowGradAdam

BUCKETS = 4096


class Reuse(nn.Module):
    """One table looked up three times in a forward (as the Next-User model looks up user ids for its sequence and
    for the next user), and a second table once; a dense head over both."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.table = HashEmbedding(BUCKETS, 8)
        self.other = HashEmbedding(BUCKETS, 8)
        self.head = nn.Linear(8, 1)

    def forward(self, a, b, c):
        x = self.head(self.table(a)).sum() + 0.3 * self.head(self.table(b) * self.other(a[:5])).sum()
        return x + (self.table(c) ** 2).mean() + self.table(b).detach().sum()  # a detached lookup: no gradient


def _batches(steps: int) -> list[tuple[torch.Tensor, ...]]:
    g = torch.Generator().manual_seed(1)
    # few distinct ids: rows repeat within a lookup and across the three lookups
    return [tuple(torch.randint(0, 40, size, generator=g) for size in ((64,), (16, 5), (33,))) for _ in range(steps)]


def _train(row_grads: bool, steps: int = 4) -> tuple[Reuse, list[torch.Tensor]]:
    model = Reuse()
    if row_grads:
        opt = RowGradAdam([model], 0.05)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=0.05, fused=True)
    grads = []
    for a, b, c in _batches(steps):
        opt.zero_grad()
        model(a, b, c).backward()
        if row_grads:
            assert model.table.emb.weight.grad.is_sparse  # the backward gave rows, not a dense table
            for table in opt.tables:
                table.densify_grad()
        grads.append(model.table.emb.weight.grad.clone())
        opt.step()
    return model, grads


def test_dense_gradient_and_weights_equal_the_dense_backward_bit_for_bit():
    dense, dense_grads = _train(row_grads=False)
    rows, row_grads = _train(row_grads=True)
    for mine, theirs in zip(row_grads, dense_grads):
        assert not mine.is_sparse
        assert torch.equal(mine, theirs)  # the rows of the step before were zeroed, the step's own summed alike
    for (name, p), q in zip(dense.named_parameters(), rows.parameters()):
        assert torch.equal(p, q), name
    assert torch.equal(dense.table.touched, rows.table.touched)


def test_densify_twice_is_harmless_and_a_dense_gradient_is_left_alone():
    model = Reuse()
    opt = RowGradAdam([model], 0.05)
    a, b, c = _batches(1)[0]
    model(a, b, c).backward()
    model.table.densify_grad()
    once = model.table.emb.weight.grad.clone()
    model.table.densify_grad()  # already dense: nothing to do
    assert torch.equal(model.table.emb.weight.grad, once)
    opt.step()


def test_lookups_without_gradients_stay_plain_embeddings():
    model = Reuse()
    RowGradAdam([model], 0.05)
    a, b, c = _batches(1)[0]
    with torch.no_grad():
        out = model.table(a)
    assert torch.equal(out, model.table.emb.weight[torch.remainder(a * 2_654_435_761, BUCKETS)])
    assert not model.table.touched.any()


def test_lazy_adams_tables_cannot_take_rows():
    model = Reuse()
    LazyAdam(model, 0.05)
    with pytest.raises(ValueError, match="lazy Adam"):
        RowGradAdam([model], 0.05)


def _tiny_run(tmp_path, monkeypatch, row_grads: bool):
    """A two-day tiny ``coldstart_ab`` in-process: every arm's learner (the shared base models, Next-User, DualRec,
    IHM) trains on the traffic it served. Without ``row_grads`` the tables' lookups are plain ``nn.Embedding``
    lookups, whose dense gradients RowGradAdam leaves as they are: torch.optim.Adam's path."""
    from scenarios import get_scenario
    from simulator.run.loop import Simulation
    from simulator.run.runtime import LocalRuntime
    from simulator.sources.synthetic import generate_synthetic
    from trainers.models import two_tower

    if not row_grads:
        monkeypatch.setattr(two_tower.RowLookup, "apply", staticmethod(lambda weight, rows: F.embedding(rows, weight)))
    sc = get_scenario("coldstart_ab").at_scale("tiny").model_copy(update={"days": 2})
    sim = Simulation(sc, generate_synthetic(sc.synthetic, sc.seed), LocalRuntime, tmp_path / f"run{int(row_grads)}",
                     progress=False)
    result = sim.run()
    monkeypatch.undo()
    return sim, result


def test_a_run_is_the_same_with_gradients_by_rows(tmp_path, monkeypatch):
    """Without gradients by rows every table takes dense Adam's path; with them the tables also keep their moments by
    rows (RowGradAdam's ``_Rows``) while few of their rows move: the run is the same either way."""
    from trainers import optim

    dense_sim, dense = _tiny_run(tmp_path, monkeypatch, row_grads=False)
    held = []
    take = optim._Rows.take
    monkeypatch.setattr(optim._Rows, "take", lambda self, rows: (held.append(len(rows)), take(self, rows))[1])
    rows_sim, rows = _tiny_run(tmp_path, monkeypatch, row_grads=True)
    assert len(held) > 100  # the moments by rows were in use
    for name, diag in dense.diagnostics.items():
        trained = [c for c in diag.columns if c.startswith("train.") and c.endswith("loss")]
        assert trained, name  # every arm's learner reports its training losses
        assert diag.select(trained).equals(rows.diagnostics[name].select(trained)), name
    assert {t for d in dense.diagnostics.values() for c in d.columns for t in ("next_user", "dualrec", "ihm")
            if c.startswith(f"train.{t}.")} == {"next_user", "dualrec", "ihm"}
    for a, b in zip(dense_sim.arms, rows_sim.arms):
        assert pl.concat(a.exposures).equals(pl.concat(b.exposures)), a.name
    assert dense.overall == rows.overall


def _spread_batches(steps: int, spread_from: int) -> list[tuple[torch.Tensor, ...]]:
    """:func:`_batches`, the third lookup's ids spread over 400 ids from step ``spread_from`` on."""
    g = torch.Generator().manual_seed(2)
    return [(a, b, torch.randint(0, 400, (33,), generator=g) if step >= spread_from else c)
            for step, (a, b, c) in enumerate(_batches(steps))]


def _train_held(rows_below: float, steps: int, spread_from: int) -> tuple[Reuse, RowGradAdam, list[bool]]:
    """RowGradAdam without densifying by hand (its moments by rows in use); from step ``spread_from`` the ids spread
    over 400 of the 4,096 rows, so a small ``rows_below`` sends the table back to dense Adam midway."""
    model = Reuse()
    opt = RowGradAdam([model], 0.05, rows_below=rows_below)
    held = []
    for a, b, c in _spread_batches(steps, spread_from):
        opt.zero_grad()
        model(a, b, c).backward()
        opt.step()
        held.append(id(model.table) in opt._rows)
    return model, opt, held


def _plain_adam(steps: int, spread_from: int) -> tuple[Reuse, torch.optim.Adam]:
    model = Reuse()
    opt = torch.optim.Adam(model.parameters(), lr=0.05, fused=True)
    for a, b, c in _spread_batches(steps, spread_from):
        opt.zero_grad()
        model(a, b, c).backward()
        opt.step()
    return model, opt


def _assert_same_state(mine: dict, theirs: dict) -> None:
    assert mine["param_groups"] == theirs["param_groups"]
    assert set(mine["state"]) == set(theirs["state"])
    for index, slots in theirs["state"].items():
        assert set(mine["state"][index]) == set(slots), index
        for name, value in slots.items():
            assert torch.equal(mine["state"][index][name], value), (index, name)


@pytest.mark.parametrize("rows_below", [0.2, 0.02])
def test_moments_by_rows_give_dense_adams_weights_and_state_bit_for_bit(rows_below):
    steps, spread_from = 8, 4
    plain, plain_opt = _plain_adam(steps, spread_from)
    mine, opt, held = _train_held(rows_below, steps, spread_from)
    if rows_below == 0.2:
        assert all(held)  # at most 440 of 4,096 rows: by rows throughout
    else:
        assert held[:spread_from] == [True] * spread_from and not held[-1]  # back to dense Adam past 2 % (82 rows)
    assert id(model_other := mine.other) in opt._rows and opt._rows[id(model_other)].k > 0
    for (name, p), q in zip(plain.named_parameters(), mine.parameters()):
        assert torch.equal(p, q), name
    _assert_same_state(opt.state_dict(), plain_opt.state_dict())


def test_moments_by_rows_survive_a_state_dict_round_trip():
    """A checkpoint taken midway (dense Adam's state dict) and loaded into a fresh optimiser continues as dense
    Adam would; the loaded tables go back to moments by rows."""
    plain, plain_opt = _plain_adam(6, 10)
    model, opt, _ = _train_held(0.2, 3, 10)
    fresh = Reuse()
    fresh.load_state_dict(model.state_dict())
    opt2 = RowGradAdam([fresh], 0.05)
    opt2.load_state_dict(opt.state_dict())
    assert id(fresh.table) in opt2._rows and opt2._rows[id(fresh.table)].k > 0
    for a, b, c in _batches(6)[3:]:
        opt2.zero_grad()
        fresh(a, b, c).backward()
        opt2.step()
    for (name, p), q in zip(plain.named_parameters(), fresh.parameters()):
        assert torch.equal(p, q), name
    _assert_same_state(opt2.state_dict(), plain_opt.state_dict())
