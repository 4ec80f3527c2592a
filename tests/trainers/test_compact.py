"""Compact checkpoint state (trainers.compact): only the rows training moved are stored, and expanding gives back
exactly the tensors that were saved."""

import pickle

import numpy as np
import pytest
import torch

from trainers.compact import SparseRows, compact_optimizer, compact_state, compact_torch, compact_tree, expand
from trainers.models.ranker import Ranker, RankerConfig
from trainers.models.two_tower import INIT_STD, HashEmbedding


def _trained_ranker(seed: int = 0, steps: int = 5, n_ids: int = 40):
    """A ranker trained with Adam a few steps on a handful of ids (most of its 2^13 rows never seen)."""
    torch.manual_seed(seed)
    cfg = RankerConfig(id_buckets=1 << 13, n_user_dense=2, n_item_dense=1, n_pair_dense=1)
    model = Ranker(cfg)
    optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        batch = {"user_id": torch.randint(0, n_ids, (32,), generator=generator),
                 "item_id": torch.randint(0, n_ids, (32,), generator=generator),
                 "creator_id": torch.randint(0, 5, (32,), generator=generator),
                 "category": torch.randint(0, 3, (32,), generator=generator),
                 "user_dense": torch.randn(32, 2, generator=generator),
                 "item_dense": torch.randn(32, 1, generator=generator),
                 "pair_dense": torch.randn(32, 1, generator=generator)}
        loss = model(batch).pow(2).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return cfg, model, optimiser


def test_initial_values_are_regenerated_bit_for_bit():
    torch.manual_seed(7)
    table = HashEmbedding(5000, 8)
    sparse = compact_state(table.state_dict())["emb.weight"]
    assert isinstance(sparse, SparseRows) and len(sparse.rows) == 0  # nothing looked up yet
    assert sparse.std == INIT_STD
    assert torch.equal(sparse.dense(), table.emb.weight.detach())


def test_only_rows_looked_up_with_gradients_are_marked():
    table = HashEmbedding(5000, 8)
    with torch.no_grad():
        table(torch.arange(100))
    assert not table.touched.any()  # serving-side lookups move nothing
    table(torch.tensor([3, 3, 17]))
    assert int(table.touched.sum()) == 2


def test_module_and_adam_state_roundtrip_exactly_and_are_small():
    cfg, model, optimiser = _trained_ranker()
    module_state, optimiser_state = compact_torch(model), compact_torch(optimiser)
    assert any(isinstance(v, SparseRows) for v in module_state.values())
    moments = [slot for slots in optimiser_state["state"].values() for slot in slots.values()]
    assert any(isinstance(m, SparseRows) and m.init_rng is None for m in moments)
    dense = len(pickle.dumps((model.state_dict(), optimiser.state_dict())))
    assert len(pickle.dumps((module_state, optimiser_state))) < dense / 10
    # loaded into a model built from another seed: every tensor equals the trained one's
    torch.manual_seed(99)
    other = Ranker(cfg)
    other_optimiser = torch.optim.Adam(other.parameters(), lr=0.01)
    other.load_state_dict(expand(module_state))
    other_optimiser.load_state_dict(expand(optimiser_state))
    for key, value in model.state_dict().items():
        assert torch.equal(other.state_dict()[key], value), key
    for index, slots in optimiser.state_dict()["state"].items():
        for name, value in slots.items():
            assert torch.equal(other_optimiser.state_dict()["state"][index][name], value), (index, name)


def test_untouched_rows_really_equal_their_initial_values():
    """The premise: under Adam without weight decay a row no gradient reached has not moved at all."""
    torch.manual_seed(0)
    initial = Ranker(RankerConfig(id_buckets=1 << 13, n_user_dense=2, n_item_dense=1, n_pair_dense=1)).user_emb.emb.weight.detach().clone()
    _, model, _ = _trained_ranker(seed=0, steps=20)
    table = model.user_emb
    untouched = ~table.touched
    assert untouched.sum() > 0 and table.touched.sum() > 0
    assert torch.equal(table.emb.weight.detach()[untouched], initial[untouched])
    assert not torch.equal(table.emb.weight.detach()[table.touched], initial[table.touched])


def test_dense_tables_and_small_tables_stay_as_they_are():
    torch.manual_seed(1)
    small = HashEmbedding(100, 4)
    small(torch.arange(3))
    assert isinstance(compact_state(small.state_dict())["emb.weight"], torch.Tensor)
    big = HashEmbedding(5000, 4)
    big(torch.arange(4000))  # 80% moved: a sparse form would not pay
    assert isinstance(compact_state(big.state_dict())["emb.weight"], torch.Tensor)
    state = {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.zeros(10, 2)}}, "param_groups": [{"lr": 0.1}]}
    assert expand(compact_optimizer(state))["state"][0]["step"] == 3.0


def test_published_weights_tree_shares_one_compacted_base():
    """The driver's collected weights: numpy dicts, one shared base model referenced by every arm."""
    _, model, _ = _trained_ranker()
    base = {key: value.detach().numpy().copy() for key, value in model.state_dict().items()}
    tree = {5: {"a": (3, {"ranker": base}, {}), "b": (3, {"ranker": base}, {})}}
    compact = compact_tree(tree)
    assert compact[5]["a"][1]["ranker"] is compact[5]["b"][1]["ranker"]
    assert isinstance(compact[5]["a"][1]["ranker"]["user_emb.emb.weight"], SparseRows)
    restored = expand(compact)
    for key, value in base.items():
        assert isinstance(restored[5]["b"][1]["ranker"][key], np.ndarray)
        np.testing.assert_array_equal(restored[5]["b"][1]["ranker"][key], value)


@pytest.mark.parametrize("value", [torch.zeros(3), np.zeros(3), 1.5, "x", None])
def test_expand_leaves_other_values_alone(value):
    assert expand(value) is value
