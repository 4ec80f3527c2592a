"""IHMTask on hand-made logged batches: positives only, the loss falls, the freeze after train_days, weights and state."""

import io

import numpy as np
import torch

from trainers.tasks.ihm_online import IHMTask
from trainers.weights import unpack_weights
from trainers.models.ihm import IHMConfig
from trainers.models.sasrec import SASRecConfig

torch.set_num_threads(1)
DAY = 86_400


def _task(**kw) -> IHMTask:
    args = {"tau": 0.1, "lr": 1e-2, "batch_size": 16, "seed": 0, "max_samples": 64, "train_days": 1,
            "periodic_retrain": False} | kw
    return IHMTask(IHMConfig(dim=8, id_buckets=256, n_item_dense=1), SASRecConfig(dim=8, ff=16, seq_len=4), **args)


def _batch(n: int = 40, day: int = 10, seed: int = 0) -> dict[str, np.ndarray]:
    """Users 0..9 like items of their own group (user % 4 == item % 4): a learnable pattern."""
    rng = np.random.default_rng(seed)
    user = rng.integers(0, 10, n)
    item = (rng.integers(0, 5, n) * 4 + user % 4).astype(np.int64)
    labels = np.zeros((n, 5), bool)
    labels[: n // 2 * 2 : 2, 0] = True  # every other row is a like
    useq = (rng.integers(0, 5, (n, 4)) * 4 + (user % 4)[:, None]).astype(np.int64)
    return {"user_id": user, "item_id": item, "creator_id": item % 3, "category": item % 4,
            "item_dense": np.ones((n, 1), np.float32), "labels": labels,
            "ihm_hist": np.where(np.arange(3)[None, :] < 2, (user[:, None] + 1) % 10, -1), "ihm_hlen": np.full(n, 2),
            "ihm_useq": useq, "ihm_useq_creator": useq % 3, "ihm_useq_cat": useq % 4,
            "ihm_useq_dense": np.ones((n, 4, 1), np.float32), "ihm_ulen": np.full(n, 3), "ihm_day": np.full(n, day)}


def test_trains_on_logged_positives_only():
    b = _batch()
    b["ihm_ulen"][0] = -1  # a slot that is not a sample (e.g. frozen days)
    rows = IHMTask.select(b, 1000, torch.Generator().manual_seed(0))
    np.testing.assert_array_equal(rows, np.flatnonzero(b["labels"][:, 0])[1:])
    st = _task().train(b, tick_seed=0)
    assert st["samples"] == len(rows) and np.isfinite(st["loss"]) and st["frozen"] == 0.0


def test_loss_falls_on_a_repeated_batch():
    task, b = _task(), _batch(n=64)
    first = task.train(b, 0)["loss"]
    for s in range(1, 30):
        last = task.train(b, s)["loss"]
    assert last < first


def test_freezes_after_train_days_unless_periodic():
    frozen, periodic = _task(train_days=2), _task(train_days=2, periodic_retrain=True)
    for day in (10, 11):
        assert frozen.train(_batch(day=day), day)["frozen"] == 0.0
    steps, w = frozen.steps, frozen.weights()
    st = frozen.train(_batch(day=12), 12)
    assert st == {"samples": 0.0, "frozen": 1.0} and frozen.steps == steps
    for k, v in frozen.weights().items():
        np.testing.assert_array_equal(v, w[k])
    for day in (10, 11, 12):
        periodic.train(_batch(day=day), day)
    assert periodic.steps > steps


def test_weights_and_state_round_trip():
    a = _task()
    a.train(_batch(), 0)
    item, user = unpack_weights(a.weights(), "item", "user")
    steps = int(a.weights()["meta.steps"])
    assert steps == a.steps > 0 and "static.proj.weight" in item and "item_emb.proj.weight" in user
    buf = io.BytesIO()
    torch.save(a.state(), buf)  # as OnlineLearner.state_bytes does
    b = _task(seed=1)
    b.load_state(torch.load(io.BytesIO(buf.getvalue()), weights_only=False))
    assert (b.first_day, b.steps) == (a.first_day, a.steps)
    sa, sb = a.train(_batch(seed=2), 5), b.train(_batch(seed=2), 5)
    assert sa == sb


def test_replay_buffer_keeps_the_latest_positives_and_trains_on_them_each_tick():
    task = _task(replay_size=30, epochs=3, max_samples=25, batch_size=8)
    st = task.train(_batch(n=40, seed=0), 0)  # 20 positives
    assert (st["samples"], st["trained"]) == (20.0, 20.0) and len(task.replay["item_id"]) == 20
    steps = task.steps
    assert steps == 3 * 3  # 3 epochs of ceil(20 / 8) minibatches
    b = _batch(n=40, seed=1)
    st = task.train(b, 1)
    assert len(task.replay["item_id"]) == 30 and st["trained"] == 25.0  # capped buffer; a draw of max_samples
    np.testing.assert_array_equal(task.replay["item_id"][-20:], b["item_id"][b["labels"][:, 0]])  # newest last


def _same(a: dict, b: dict) -> bool:
    return all(np.array_equal(a[k], b[k]) for k in a if k != "meta.steps")


def _weights_of(best: dict) -> dict:
    return {f"{tower}.{k}": v.numpy() for tower, state in best.items() for k, v in state.items()}


def test_held_out_positives_are_never_trained_on_and_scoring_them_leaves_the_weights():
    task, b = _task(early_stop_ticks=2, holdout_share=0.5, holdout_size=1000, max_samples=1000), _batch(n=64)
    rows = IHMTask.select(b, 1000, torch.Generator().manual_seed(0))
    st = task.train(b, 0)
    held = len(task.holdout["item_id"])
    assert 0 < held < len(rows) and st["held_out"] == held and st["trained"] == len(rows) - held
    assert st["samples"] == len(rows) and np.isfinite(st["holdout_loss"])
    kept = {(int(u), int(i)) for u, i in zip(b["user_id"][rows], b["item_id"][rows])}
    assert {(int(i),) for i in task.holdout["item_id"]} <= {(i,) for _, i in kept}
    before = task.weights()
    assert task.holdout_loss(task.item_tower, task.user_tower) == st["holdout_loss"]  # fixed order: repeatable
    assert _same(task.weights(), before)
    assert _same(_weights_of(task.best_weights), before)  # the first challenger is the champion
    for s in range(1, 4):
        task.train(_batch(n=64, seed=s), s)
    assert len(task.holdout["item_id"]) > held  # the held-out set grows with every tick (the latest 1000 kept)


def test_early_stop_puts_the_champion_back_and_freezes(monkeypatch):
    task = _task(early_stop_ticks=2, train_days=5)
    # per tick: the challenger's held-out loss, then the champion's (none before the first tick)
    script = iter([3.0, 2.0, 3.0, 2.5, 2.0, 2.4, 2.0])
    monkeypatch.setattr(task, "holdout_loss", lambda item, user: next(script))
    after = []
    for tick in range(3):
        st = task.train(_batch(seed=tick), tick)
        after.append(task.weights())
        assert st["frozen"] == 0.0 and st["holdout_loss"] == [3.0, 2.0, 2.5][tick]
    assert task.since_best == 1 and _same(_weights_of(task.best_weights), after[1])
    steps = task.steps
    st = task.train(_batch(seed=3), 3)  # the challenger loses a second time: stop
    assert st["early_stopped"] == 1.0 and st["holdout_loss_best"] == 2.0 and task.stopped
    assert _same(task.weights(), after[1]) and task.steps > steps  # the champion, as a new version for the channel
    assert task.train(_batch(seed=4), 4) == {"samples": 0.0, "frozen": 1.0}  # frozen from then on
    monkeypatch.undo()
    buf = io.BytesIO()
    torch.save(task.state(), buf)
    again = _task(early_stop_ticks=2, train_days=5, seed=3)
    again.load_state(torch.load(io.BytesIO(buf.getvalue()), weights_only=False))
    assert again.stopped and again.since_best == 2 and _same(again.weights(), task.weights())
    assert {k: len(v) for k, v in again.holdout.items()} == {k: len(v) for k, v in task.holdout.items()}


def test_the_end_of_train_days_keeps_the_champion_and_periodic_retrain_never_stops(monkeypatch):
    task = _task(early_stop_ticks=5, train_days=1)
    script = iter([3.0, 2.0, 3.0, 2.5, 2.0])
    monkeypatch.setattr(task, "holdout_loss", lambda item, user: next(script))
    for tick in range(3):
        task.train(_batch(day=10, seed=tick), tick)
        if tick == 1:
            champion = task.weights()
    assert not _same(task.weights(), champion)
    assert task.train(_batch(day=11, seed=3), 3) == {"samples": 0.0, "frozen": 1.0}  # day 11: frozen
    assert task.stopped and _same(task.weights(), champion)
    periodic = _task(early_stop_ticks=1, train_days=1, periodic_retrain=True)
    for tick in range(4):
        assert "holdout_loss" not in periodic.train(_batch(day=10 + tick, seed=tick), tick)
    assert not periodic.stopped and not periodic.holdout
