"""Data-parallel training of the shared base models (OnlineLearner.shard): two processes over gloo, each a share
of every minibatch, against one process on the whole batch."""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from trainers.compact import SparseRows, compact_torch
from trainers.learner import OnlineLearner
from trainers.models.ranker import RankerConfig
from trainers.models.two_tower import TwoTowerConfig

N = 1024  # rows of the tick: minibatches of 256 split 128 / 128


def _batch(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.random((N, 5)) < 0.3
    return {"user_id": rng.integers(0, 300, N), "item_id": rng.integers(0, 500, N), "creator_id": rng.integers(0, 50, N),
            "category": rng.integers(0, 8, N), "user_dense": rng.normal(size=(N, 3)).astype(np.float32),
            "item_dense": rng.normal(size=(N, 1)).astype(np.float32),
            "pair_dense": rng.normal(size=(N, 3)).astype(np.float32), "labels": labels}


def _learner(optimizer: str = "adam") -> OnlineLearner:
    return OnlineLearner(TwoTowerConfig(id_buckets=1 << 13), RankerConfig(id_buckets=1 << 13), lr=3e-3, batch_size=256,
                         temperature=0.1, epochs=1, seed=7, optimizer=optimizer)


def _ranker_weights(learner: OnlineLearner) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in learner.ranker.state_dict().items()}


def _worker(rank: int, world: int, port: int, out: str, optimizer: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        learner = _learner(optimizer)
        learner.shard(rank, world)
        for tick in range(2):
            learner.train_tick(_batch(tick), tick_seed=100 + tick)
        state = compact_torch(learner.ranker)
        torch.save({"ranker": _ranker_weights(learner), "touched": learner.ranker.user_emb.touched.clone(),
                    "compact_rows": len(state["user_emb.emb.weight"].rows)
                    if isinstance(state["user_emb.emb.weight"], SparseRows) else -1},
                   f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module", params=["adam", "lazy_adam"])
def two_workers(request, tmp_path_factory):
    """Two workers' results, with the base models' dense Adam and with lazy Adam (sparse gradients all-reduced)."""
    out = str(tmp_path_factory.mktemp("ddp") / "worker")
    mp.start_processes(_worker, args=(2, _free_port(), out, request.param), nprocs=2, join=True, start_method="spawn")
    return request.param, [torch.load(f"{out}.{rank}", weights_only=False) for rank in range(2)]


def test_workers_hold_identical_weights(two_workers):
    zero, one = two_workers[1]
    for key, value in zero["ranker"].items():
        np.testing.assert_array_equal(value, one["ranker"][key], err_msg=key)


def test_ranker_matches_one_process_on_the_whole_batch(two_workers):
    """The ranker's loss is a mean over rows: averaging the two halves' gradients is the whole minibatch's gradient,
    so two workers reach the one-process weights up to float rounding (the two-tower does not: its in-batch
    negatives are each worker's share, docs/architecture.md)."""
    optimizer, workers = two_workers
    single = _learner(optimizer)
    for tick in range(2):
        single.train_tick(_batch(tick), tick_seed=100 + tick)
    for key, value in _ranker_weights(single).items():
        if value.dtype.kind == "f":
            np.testing.assert_allclose(workers[0]["ranker"][key], value, rtol=1e-4, atol=1e-5, err_msg=key)
        else:  # the touched marks and the generator state
            np.testing.assert_array_equal(workers[0]["ranker"][key], value, err_msg=key)


def test_touched_rows_are_every_workers_union(two_workers):
    """Each worker looked up only its share's ids, but the averaged gradient moved all of them: the marks (and so
    the compact checkpoint) cover the union."""
    optimizer, workers = two_workers
    single = _learner(optimizer)
    for tick in range(2):
        single.train_tick(_batch(tick), tick_seed=100 + tick)
    assert torch.equal(workers[0]["touched"], single.ranker.user_emb.touched)
    assert torch.equal(workers[1]["touched"], single.ranker.user_emb.touched)
    assert workers[0]["compact_rows"] == int(single.ranker.user_emb.touched.sum()) > 0
