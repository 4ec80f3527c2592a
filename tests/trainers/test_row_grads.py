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
    dense_sim, dense = _tiny_run(tmp_path, monkeypatch, row_grads=False)
    rows_sim, rows = _tiny_run(tmp_path, monkeypatch, row_grads=True)
    for name, diag in dense.diagnostics.items():
        trained = [c for c in diag.columns if c.startswith("train.") and c.endswith("loss")]
        assert trained, name  # every arm's learner reports its training losses
        assert diag.select(trained).equals(rows.diagnostics[name].select(trained)), name
    assert {t for d in dense.diagnostics.values() for c in d.columns for t in ("next_user", "dualrec", "ihm")
            if c.startswith(f"train.{t}.")} == {"next_user", "dualrec", "ihm"}
    for a, b in zip(dense_sim.arms, rows_sim.arms):
        assert pl.concat(a.exposures).equals(pl.concat(b.exposures)), a.name
    assert dense.overall == rows.overall
