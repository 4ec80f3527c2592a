"""ArmLearners: shared base models are trained on the pooled (or the control's) traffic and served to every arm;
per-arm base models are each arm's own; every arm starts serving the same base weights when they are shared."""

import threading
import time

import numpy as np
import pytest
import torch

from serving.arms import arm_tasks, build_arm

from trainers.arm_context import ArmContext, arm_context, base_model_seed, model_configs
from simulator.core.config import ArmSpec, ModelConfig, NextUserSpec, TrainConfig
from trainers.learner import BATCH_KEYS, OnlineLearner, concat_batches
from trainers.online import SHARED_BASE, ArmLearners, make_learner, tick_seed, union_parts
from trainers.weights import WeightsRef

CTX = ArmContext(model=ModelConfig(dim=8, id_buckets=256, hidden=16), slate_size=4, n_item_dense=1, seed=7)
ARMS = [ArmSpec(name="base", kind="base", share=0.5),
        ArmSpec(name="nu", kind="next_user", share=0.5, next_user=NextUserSpec(max_train_samples=64))]


def _batch(seed: int, n: int = 96) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    item = rng.integers(0, 16, n).astype(np.int64)
    labels = np.zeros((n, 5), bool)
    labels[:, 0] = item % 2 == 0
    return {
        "user_id": rng.integers(0, 32, n).astype(np.int64), "item_id": item, "creator_id": item // 4,
        "category": item % 4, "user_dense": rng.random((n, 3)).astype(np.float32),
        "item_dense": np.ones((n, 1), np.float32), "pair_dense": rng.random((n, 3)).astype(np.float32),
        "labels": labels,
        # an arm-specific logged feature (as the Next-User channel logs): must not reach the base models
        "extra_feature": rng.random(n).astype(np.float32),
    }


def _ctx(shared: bool) -> ArmContext:
    return ArmContext(model=CTX.model, slate_size=CTX.slate_size, n_item_dense=CTX.n_item_dense, seed=CTX.seed,
                      shared_base=shared)


def _group(mode: str) -> ArmLearners:
    return ArmLearners(ARMS, _ctx(mode != "per_arm"), TrainConfig(batch_size=32, base_models=mode), control="base", tasks=arm_tasks)


def _reference_base() -> OnlineLearner:
    tt, rk = model_configs(CTX.model, CTX.n_item_dense)
    tc = TrainConfig(batch_size=32)
    return OnlineLearner(tt, rk, lr=tc.lr, batch_size=32, temperature=tc.temperature, epochs=1,
                         seed=base_model_seed(CTX.seed))


def _close(a: dict, b: dict) -> bool:
    return all(np.allclose(a[k], b[k]) for k in a) and set(a) == set(b)


@pytest.mark.parametrize("mode", ["shared", "control"])
def test_shared_base_is_trained_on_the_pooled_or_control_traffic_and_served_to_every_arm(mode):
    group, ref = _group(mode), _reference_base()
    for tick in range(3):
        batches = {"base": _batch(10 * tick), "nu": _batch(10 * tick + 1)}
        out = group.train_tick(tick, batches)
        pooled = [batches["base"]] if mode == "control" else [batches["base"], batches["nu"]]
        ref.train_tick(concat_batches([{k: b[k] for k in BATCH_KEYS} for b in pooled]), tick_seed(ref.seed, tick))
    w_base, w_nu = out["base"][1], out["nu"][1]
    expected = ref.weights()
    for model in ("two_tower", "ranker"):
        assert _close(w_base[model], expected[model]), f"{mode}: base weights are not the reference's"
        assert _close(w_nu[model], expected[model]), f"{mode}: arms are served different base weights"
    assert "next_user" in w_nu and "next_user" not in w_base  # strategy models stay the arm's own
    assert out["nu"][2]["ranker_auc_like"] == out["base"][2]["ranker_auc_like"]  # the shared ranker's stats


def test_per_arm_base_models_are_each_arms_own_and_unchanged():
    group = _group("per_arm")
    solo = make_learner(ARMS[1], CTX, TrainConfig(batch_size=32, base_models="per_arm"), 1, arm_tasks)
    for tick in range(2):
        batches = {"base": _batch(tick), "nu": _batch(100 + tick)}
        out = group.train_tick(tick, batches)
        solo.train_tick(batches["nu"], tick_seed(solo.seed, tick))
    assert _close(out["nu"][1]["ranker"], solo.weights()["ranker"])
    assert not _close(out["nu"][1]["ranker"], out["base"][1]["ranker"])
    assert SHARED_BASE not in group.state()


def test_state_round_trip_and_a_clear_error_across_modes():
    a = _group("shared")
    a.train_tick(0, {"base": _batch(0), "nu": _batch(1)})
    b = _group("shared")
    b.load_state(a.state())
    nxt = {"base": _batch(2), "nu": _batch(3)}
    wa, wb = a.train_tick(1, nxt), b.train_tick(1, nxt)
    assert _close(wa["nu"][1]["ranker"], wb["nu"][1]["ranker"])
    with pytest.raises(ValueError, match="base_models"):
        _group("per_arm").load_state(a.state())


def test_control_mode_needs_the_control_arm():
    with pytest.raises(ValueError, match="control arm 'nope'"):
        ArmLearners(ARMS, _ctx(True), TrainConfig(base_models="control"), control="nope", tasks=arm_tasks)


def test_arms_start_from_the_same_base_weights_only_when_shared():
    for shared in (True, False):
        p0, p1 = (build_arm(ARMS[i], arm_context(_ctx(shared), i)) for i in range(2))
        same = all(np.allclose(v.numpy(), p1.ranker.state_dict()[k].numpy()) for k, v in p0.ranker.state_dict().items())
        assert same == shared
    # ... and the shared learner starts from those weights too
    p0 = build_arm(ARMS[0], arm_context(_ctx(True), 0))
    ref = _reference_base().weights()["ranker"]
    assert all(np.allclose(v.numpy(), ref[k]) for k, v in p0.ranker.state_dict().items())


def _equal(a, b) -> bool:
    """The same nested weights or stats, bit for bit."""
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, np.ndarray):
        return np.array_equal(a, b)
    return a == b


@pytest.mark.parametrize("world", [2, 3])
def test_learners_side_by_side_give_exactly_one_process_results(world):
    """placement='by_learner': worker 0 trains the shared base learner alone, workers 1.. the arms' strategy
    learners; the union of their parts (union_parts, as the coordinator makes it) is one process's result, bit for
    bit, tick after tick, and so is the union of their states."""
    cfg = TrainConfig(batch_size=32, placement="by_learner")
    one = ArmLearners(ARMS, _ctx(True), cfg, control="base", tasks=arm_tasks)
    workers = [ArmLearners(ARMS, _ctx(True), cfg, control="base", tasks=arm_tasks, rank=r, world=world)
               for r in range(world)]
    assert workers[0].base is not None and not workers[0].learners  # the base learner alone
    assert all(w.base is None for w in workers[1:])
    assert sorted(a for w in workers[1:] for a in w.learners) == ["base", "nu"]
    assert (world == 3) == all(len(w.learners) == 1 for w in workers[1:])  # round-robin over workers 1..N-1
    for tick in range(3):
        batches = {"base": _batch(10 * tick), "nu": _batch(10 * tick + 1)}
        expected = one.train_tick(tick, batches)
        got = union_parts({r: w.train_tick(tick, batches) for r, w in enumerate(workers)})
        assert list(got) == list(expected)
        for arm in expected:
            assert got[arm][0] == expected[arm][0] and got[arm][0] is not None, arm  # the strategy learner's version
            assert _equal(got[arm][1], expected[arm][1]), arm
            assert _equal(got[arm][2], expected[arm][2]), arm
    states = union_parts({r: w.state() for r, w in enumerate(workers)})
    assert set(states) == set(one.state()) == {"base", "nu", SHARED_BASE}
    # a checkpoint of either placement restores into the other: each worker takes its learners' states
    back = [ArmLearners(ARMS, _ctx(True), cfg, control="base", tasks=arm_tasks, rank=r, world=world)
            for r in range(world)]
    for w in back:
        w.load_state(one.state())
    nxt = {"base": _batch(50), "nu": _batch(51)}
    expected = one.train_tick(3, nxt)
    got = union_parts({r: w.train_tick(3, nxt) for r, w in enumerate(back)})
    assert all(_equal(got[a][1], expected[a][1]) for a in expected)


def test_by_learner_needs_shared_base_models():
    with pytest.raises(ValueError, match="placement='by_learner'.*per_arm"):
        TrainConfig(placement="by_learner", base_models="per_arm")


def test_weights_ref_parts_merge_in_order():
    """A WeightsRef of two workers' parts: fetched in order of .refs, merged with the later part's keys winning."""
    base = WeightsRef.of("tick-ref-0", "nu")
    strategy = WeightsRef.of("tick-ref-1", "nu")
    joined = base.join(strategy)
    assert joined.refs == ["tick-ref-0", "tick-ref-1"]
    fetched = [{"nu": {"ranker": 1, "two_tower": 2}}, {"nu": {"next_user": 3}}]
    assert joined.pick(fetched) == {"ranker": 1, "two_tower": 2, "next_user": 3}
    with pytest.raises(ValueError, match="2 weight parts, 1 fetched"):
        joined.pick(fetched[:1])
    merged = union_parts({0: {"nu": (None, base, {"a": 1})}, 1: {"nu": (4, strategy, {"b": 2})}})
    assert merged == {"nu": (4, joined, {"a": 1, "b": 2})}


class _GlobalDraws:
    """A strategy task that draws from torch's global generator, seeded by tick (as IHM's dropout does), and
    records the thread it trained in."""

    name = "global_draws"

    def __init__(self):
        self.w = torch.zeros(4)
        self.threads: list[str] = []

    def train(self, batch, tick_seed):
        self.threads.append(threading.current_thread().name)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(tick_seed)
            for _ in range(50):  # long enough to overlap the base learner's tick
                self.w += torch.rand(4)
                time.sleep(0.001)
        return {"samples": float(len(batch["user_id"]))}

    def weights(self):
        return {"w": self.w.numpy().copy()}

    def state(self):
        return self.w.clone()

    def load_state(self, state):
        self.w = state.clone()


def _with_global_draws(arm, actx, lr, batch_size):
    return arm_tasks(arm, actx, lr, batch_size) + [_GlobalDraws()]


def test_the_base_learners_thread_gives_exactly_one_threads_results():
    """train.base_thread: the shared base learner trains in a second thread while the strategy learner that draws
    from torch's global generator (pinned) trains in the caller's: every weight and statistic the same bit for bit
    as with it off, tick after tick."""
    on = ArmLearners(ARMS, _ctx(True), TrainConfig(batch_size=32, base_thread=True), control="base",
                     tasks=_with_global_draws)
    off = ArmLearners(ARMS, _ctx(True), TrainConfig(batch_size=32, base_thread=False), control="base",
                      tasks=_with_global_draws)
    base_threads = []
    base_tick = on.base.train_tick

    def recorded(*args):
        base_threads.append(threading.current_thread().name)
        return base_tick(*args)

    on.base.train_tick = recorded
    for tick in range(3):
        batches = {"base": _batch(10 * tick), "nu": _batch(10 * tick + 1)}
        got, expected = on.train_tick(tick, batches), off.train_tick(tick, batches)
        assert list(got) == list(expected) == ["base", "nu"]
        for arm in expected:
            assert got[arm][0] == expected[arm][0] == tick + 1  # the version this tick gave
            assert _equal(got[arm][1], expected[arm][1]), arm
            assert _equal(got[arm][2], expected[arm][2]), arm
    assert base_threads == ["coldsim-learner_0"] * 3  # it did train beside the strategy learners
    main = threading.current_thread().name
    assert all(t.threads == [main] * 3 for lr in on.learners.values() for t in lr.extra_tasks
               if isinstance(t, _GlobalDraws))


def test_the_base_learner_draws_nothing_from_torchs_global_generator():
    """What the base learner's thread rests on: a strategy learner's draws from the global generator cannot be
    interleaved with the base learner's, which has none (every draw from its own generator seeded by tick)."""
    base = _reference_base()
    for tick in range(2):
        before = torch.get_rng_state()
        base.train_tick(_batch(tick), tick_seed(base.seed, tick))
        assert torch.equal(torch.get_rng_state(), before)
