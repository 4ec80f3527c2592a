"""Sharded arms (serving.shards): a stable partition of the users, row-invariant model calls, and any number of
shards giving exactly the slates, state and metrics of one."""

import numpy as np
import polars as pl
import pytest
import torch
from pydantic import ValidationError

from scenarios import get_scenario
from serving.arms import build_arm
from serving.row_invariant import ROW_BLOCK, row_invariant
from serving.shards import ShardDivergence, ShardedArm, owners, shard_of
from simulator.core.config import ArmSpec, ModelConfig, ServeConfig
from simulator.run.loop import Simulation
from simulator.run.runtime import LocalRuntime
from simulator.sources.synthetic import generate_synthetic
from trainers.arm_context import ArmContext

DAY = 86_400
T = 10 * DAY


def _splitmix64(x: int) -> int:
    """The reference: splitmix64's finaliser on Python integers."""
    m = (1 << 64) - 1
    x = (x + 0x9E3779B97F4A7C15) & m
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & m
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & m
    return x ^ (x >> 31)


def test_shard_of_is_splitmix64_modulo_the_shards_and_balanced():
    ids = np.array([0, 1, 2, 12345, 2**40 + 7])
    for shards in (2, 3, 7):
        assert shard_of(ids, shards).tolist() == [_splitmix64(int(i)) % shards for i in ids]
    counts = np.bincount(shard_of(np.arange(100_000), 4), minlength=4)
    assert np.abs(counts / 25_000 - 1).max() < 0.02, counts
    parts = owners(np.arange(1000) * 7, 3)
    assert sorted(np.concatenate(parts).tolist()) == list(range(1000))  # a partition of the batch's positions


def test_row_invariant_gives_a_row_the_same_bits_in_any_batch():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(20, 64), torch.nn.ReLU(), torch.nn.Linear(64, 5), torch.nn.Sigmoid())
    x = torch.randn(300, 20)
    with torch.no_grad():
        whole = row_invariant(model, x)
        for start, n in [(0, 1), (3, 2), (5, 5), (7, 6), (1, 31), (2, ROW_BLOCK + 1), (11, 250)]:
            assert torch.equal(row_invariant(model, x[start:start + n]), whole[start:start + n]), (start, n)
        batch = {"a": x[:, :10], "b": x[:, 10:]}  # dicts of inputs are padded alike
        both = lambda d: model(torch.cat([d["a"], d["b"]], 1))  # noqa: E731
        assert torch.equal(row_invariant(both, {k: v[4:9] for k, v in batch.items()}), whole[4:9])


def _arm(kind: str):
    spec = ArmSpec(name="a", kind=kind, share=0.5)
    return build_arm(spec, ArmContext(model=ModelConfig(dim=8, id_buckets=1024, hidden=16), slate_size=4,
                                      n_item_dense=1, seed=3))


@pytest.mark.parametrize("kind", ["base", "next_user", "dualrec", "ihm"])
def test_a_sharded_arm_serves_and_keeps_exactly_what_one_arm_does(kind):
    """Batches of 1 to 40 requests (one shard often gets none), uploads, feedback and a day end: the same slates
    (every field, logged features included), diagnostics and state on every shard as one unsharded arm."""
    one, sharded = _arm(kind), ShardedArm([_arm(kind) for _ in range(3)])
    rng = np.random.default_rng(0)
    items = np.arange(60)
    for arm in (one, sharded):
        arm.upload_items(items, items % 7, np.full(60, T - DAY), items % 3, np.ones((60, 1), np.float32))
    for step, n in enumerate([1, 2, 7, 40, 3, 25]):
        users = rng.choice(200, n, replace=False)
        ts = np.full(n, T + 60 * step)
        a, b = one.recommend(users, ts, seed=step), sharded.recommend(users, ts, seed=step)
        for field in ("item_ids", "channel", "creator_id", "score", "user_dense", "item_dense", "pair_dense"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)
        assert a.extra.keys() == b.extra.keys()
        for key in a.extra:
            np.testing.assert_array_equal(a.extra[key], b.extra[key], err_msg=key)
        valid = a.item_ids >= 0
        r, c = np.nonzero(valid)
        labels = rng.random((len(r), 5)) < 0.3
        for arm in (one, sharded):
            arm.feedback(users[r], a.item_ids[r, c], ts[r], labels)
    assert one.end_day(T + DAY) == sharded.end_day(T + DAY)
    state = one.snapshot()
    assert all(shard.snapshot() == state for shard in sharded.shards)


def test_shards_that_disagree_at_a_day_end_stop_the_run():
    sharded = ShardedArm([_arm("base") for _ in range(2)])
    sharded.shards[1].end_day = lambda ts: {"x": 1.0}
    with pytest.raises(ShardDivergence, match="arm 'a'"):
        sharded.end_day(T)


def test_shard_resources_need_one_entry_per_shard():
    ServeConfig(arm_replicas=2, shard_resources=[{"a": 1}, {"b": 1}])
    with pytest.raises(ValidationError, match="shard_resources has 1 entries for arm_replicas=2"):
        ServeConfig(arm_replicas=2, shard_resources=[{"a": 1}])
    with pytest.raises(ValidationError, match="arm_replicas"):
        ServeConfig(arm_replicas=0)


@pytest.fixture(scope="module")
def tiny():
    scenario = get_scenario("coldstart_ab").at_scale("tiny").with_overrides(days=2)
    return scenario, generate_synthetic(scenario.synthetic, scenario.seed)


def _run(scenario, log, replicas: int, tmp_path):
    scenario = scenario.model_copy(update={"serve": ServeConfig(arm_replicas=replicas)})
    sim = Simulation(scenario, log, LocalRuntime, tmp_path / f"r{replicas}", progress=False)
    return sim, sim.run()


def test_a_run_with_sharded_arms_has_exactly_the_metrics_of_one_shard(tiny, tmp_path):
    """Every arm of coldstart_ab (base, Next-User, DualRec, IHM) in 1, 2 and 3 shards, in process."""
    scenario, log = tiny
    one, one_result = _run(scenario, log, 1, tmp_path)
    for replicas in (2, 3):
        sim, result = _run(scenario, log, replicas, tmp_path)
        assert result.overall == one_result.overall, replicas
        for arm in one.arms:
            assert pl.concat(arm.exposures).equals(pl.concat(sim.arms[arm.index].exposures)), (replicas, arm.name)
        assert sim.diagnostics == one.diagnostics
