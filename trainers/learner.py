"""OnlineLearner: the per-arm training step on one tick's logged exposures (pure torch, no Ray).

The same object runs in-process (local runtime, tests) and inside the long-lived Ray Train
worker (:mod:`trainers.online`); the Ray side only moves batches in and weights out.

A training batch is the arm's own feature-logged traffic: the ids and dense features the
serving stack used when it ranked each exposed item, plus the world's responses.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from trainers.compact import compact_torch, expand
from trainers.losses import in_batch_softmax, multitask_bce
from trainers.metrics import auc
from trainers.models.ranker import Ranker, RankerConfig
from trainers.models.two_tower import HashEmbedding, TwoTower, TwoTowerConfig
from trainers.optim import make_optimizer

BATCH_KEYS = ("user_id", "item_id", "creator_id", "category", "user_dense", "item_dense", "pair_dense", "labels")


def as_tensor(column: np.ndarray) -> torch.Tensor:
    """A logged batch column as a tensor: floats as float32, integers and booleans as they are."""
    tensor = torch.from_numpy(np.ascontiguousarray(column))
    return tensor.float() if tensor.is_floating_point() else tensor


def to_tensors(batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Every column of a logged batch as a tensor (:func:`as_tensor`)."""
    return {key: as_tensor(column) for key, column in batch.items()}


def concat_batches(batches: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    batches = [b for b in batches if len(b["user_id"])]
    if not batches:
        return {}
    return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


def draws_global_rng(task: Any) -> bool:
    """Whether a strategy task draws from (or seeds) torch's global generator while it trains: its
    ``draws_global_rng`` attribute, True where it has none (a task that does not say so is pinned to the caller's
    thread, :mod:`trainers.two_threads`)."""
    return bool(getattr(task, "draws_global_rng", True))


@dataclass
class LearnerState:
    """What :class:`OnlineLearner` checkpoints (its state record, :mod:`trainers.checkpoint`'s convention written
    out by hand: this module imports only torch, numpy and the models)."""

    version: int
    samples_seen: int
    extra_tasks: dict[str, Any] = field(default_factory=dict)  # each task's state record, by task name
    two_tower: dict | None = None  # state dicts of the base models and their optimisers; None without them
    ranker: dict | None = None
    opt_tt: dict | None = None
    opt_rk: dict | None = None


class OnlineLearner:
    """Holds one arm's two-tower and ranker with their optimisers; trains on ticks, exports weights.

    With ``base_models=False`` it holds only the arm's own strategy models (``extra_tasks``): the base models
    are then one shared learner's (:class:`trainers.online.ArmLearners`)."""

    # the constructor's arguments, and the data-parallel placement (set by ``shard``) with its DDP wrappers
    NOT_SAVED = ("base_models", "batch_size", "temperature", "epochs", "seed", "optimizer", "rank", "world", "_ddp",
                 "_sparse")

    def __init__(self, tt_cfg: TwoTowerConfig, rk_cfg: RankerConfig, lr: float, batch_size: int,
                 temperature: float, epochs: int, seed: int, extra_tasks: list | None = None,
                 base_models: bool = True, optimizer: str = "adam"):
        """``extra_tasks``: the arm's own models, each a :class:`trainers.tasks.base.Task` (e.g.
        :class:`trainers.tasks.next_user.NextUserTask`). ``optimizer``: the base models' (:mod:`trainers.optim`)."""
        self.base_models = base_models
        self.optimizer = optimizer
        if base_models:
            torch.manual_seed(seed)
            self.two_tower = TwoTower(tt_cfg)
            self.ranker = Ranker(rk_cfg)
            # fused Adam: one kernel over every parameter; the dense step over the hashed-id tables dominated a
            # minibatch (docs/performance.md, "Training throughput"); or lazy Adam over the tables
            self.opt_tt = make_optimizer(self.two_tower, lr, optimizer)
            self.opt_rk = make_optimizer(self.ranker, lr, optimizer)
        self.batch_size = batch_size
        self.temperature = temperature
        self.epochs = epochs
        self.seed = seed
        self.version = 0
        self.samples_seen = 0
        self.extra_tasks = list(extra_tasks or [])
        self.rank, self.world = 0, 1
        self._ddp: dict[str, torch.nn.Module] = {}
        self._sparse: dict[str, list[torch.nn.Parameter]] = {}

    @property
    def draws_global_rng(self) -> bool:
        """Whether a tick draws from torch's global generator: the base models never do (every draw from a
        generator seeded by tick), a strategy task as it says (:func:`draws_global_rng`)."""
        return any(draws_global_rng(task) for task in self.extra_tasks)

    def shard(self, rank: int, world: int) -> None:
        """Train the base models data-parallel as worker ``rank`` of ``world`` (a ``torch.distributed`` process
        group must be up): each worker takes every ``world``-th row of each minibatch and DDP averages the
        gradients, so every worker applies the same update and holds the same weights."""
        if not (0 <= rank < world):
            raise ValueError(f"shard: rank {rank} outside a world of {world}")
        self.rank, self.world = rank, world
        if world > 1 and self.base_models:
            from torch.nn.parallel import DistributedDataParallel

            for key, module in (("ranker", self.ranker), ("two_tower", self.two_tower)):
                for table in module.modules():  # DDP all-reduces dense gradients: no gradients by rows
                    if isinstance(table, HashEmbedding):
                        table.row_grads = False
                # lazy Adam's tables (sparse gradients) are averaged by _average_sparse_grads, not by DDP
                sparse = [(f"{name}.emb.weight", table.emb.weight) for name, table in module.named_modules()
                          if isinstance(table, HashEmbedding) and table.emb.sparse]
                if sparse:
                    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(module, [n for n, _ in sparse])
                self._sparse[key] = [param for _, param in sparse]
                # buffers stay each worker's own: ``touched`` is OR-reduced after every tick (_sync_touched)
                self._ddp[key] = DistributedDataParallel(module, broadcast_buffers=False)

    def _share(self, idx: torch.Tensor) -> torch.Tensor:
        return idx[self.rank :: self.world] if self.world > 1 else idx

    def _average_sparse_grads(self, key: str) -> None:
        """Average the sparse gradients of the ``key`` model's lazy-Adam tables over the workers, as DDP averages
        the dense ones: every worker's (rows, values) are gathered with dense all-gathers, concatenated in rank
        order and coalesced (duplicate rows summed), the same on every worker. Not gloo's sparse all-reduce,
        through which DDP would do it: that crashed a worker now and then ("malloc(): unaligned tcache chunk
        detected", torch 2.13 CPU)."""
        import torch.distributed as dist

        for param in self._sparse.get(key, ()):
            grad = param.grad.coalesce() if param.grad is not None else torch.sparse_coo_tensor(
                torch.empty((1, 0), dtype=torch.long), torch.empty((0, *param.shape[1:])), param.shape)
            rows, values = grad.indices()[0], grad.values()
            counts = [torch.zeros(1, dtype=torch.long) for _ in range(self.world)]
            dist.all_gather(counts, torch.tensor([rows.numel()]))
            n = [int(c.item()) for c in counts]
            size = max(n)
            padded_rows = torch.zeros(size, dtype=torch.long)
            padded_rows[: rows.numel()] = rows
            padded_values = torch.zeros((size, *values.shape[1:]), dtype=values.dtype)
            padded_values[: rows.numel()] = values
            all_rows = [torch.empty_like(padded_rows) for _ in range(self.world)]
            all_values = [torch.empty_like(padded_values) for _ in range(self.world)]
            dist.all_gather(all_rows, padded_rows)
            dist.all_gather(all_values, padded_values)
            param.grad = torch.sparse_coo_tensor(
                torch.cat([r[:k] for r, k in zip(all_rows, n)])[None],
                torch.cat([v[:k] for v, k in zip(all_values, n)]) / self.world, param.shape).coalesce()

    def _sync_touched(self) -> None:
        """Every worker marks the rows its share looked up; all of them moved (the averaged gradient reached
        them), so the marks are OR-reduced: checkpoints must store every moved row (trainers.compact)."""
        import torch.distributed as dist

        for module in (self.ranker, self.two_tower):
            for table in module.modules():
                if isinstance(table, HashEmbedding):
                    marks = table.touched.to(torch.uint8)
                    dist.all_reduce(marks, op=dist.ReduceOp.MAX)
                    table.touched.copy_(marks.bool())

    def train_tick(self, batch: dict[str, np.ndarray], tick_seed: int) -> dict[str, float]:
        """One pass (``epochs``) over a tick's exposures: ranker on all, two-tower on positives."""
        self.version += 1
        if not batch or len(batch["user_id"]) == 0:
            return {"ranker_loss": float("nan"), "two_tower_loss": float("nan"), "samples": 0.0} if self.base_models else {}
        self.samples_seen += len(batch["user_id"])
        stats = self._train_base(batch, tick_seed) if self.base_models else {}
        for i, task in enumerate(self.extra_tasks):
            sub_seed = int(np.random.SeedSequence([tick_seed, i + 1]).generate_state(1)[0])
            stats.update({f"{task.name}.{k}": v for k, v in task.train(batch, sub_seed).items()})
        return stats

    def _train_base(self, batch: dict[str, np.ndarray], tick_seed: int) -> dict[str, float]:
        g = torch.Generator().manual_seed(tick_seed)
        t = to_tensors({k: v for k, v in batch.items() if k in BATCH_KEYS})
        labels = t["labels"].float()
        n = labels.shape[0]
        rk_losses, tt_losses = [], []
        self.ranker.train()
        self.two_tower.train()
        pos = torch.nonzero(labels.sum(1) > 0).squeeze(1)
        with torch.no_grad():  # progressive validation: the tick is predicted before it is trained on
            self.ranker.eval()
            like_auc = auc(self.ranker(t)[:, 0].numpy(), labels[:, 0].numpy())
            self.ranker.train()
        ranker, two_tower = self._ddp.get("ranker", self.ranker), self._ddp.get("two_tower", self.two_tower)
        for _ in range(self.epochs):
            perm = torch.randperm(n, generator=g)  # the same on every worker: each takes its share of a minibatch
            for s in range(0, n, self.batch_size):
                idx = perm[s : s + self.batch_size]
                if len(idx) < self.world:  # a worker would get no row (every worker skips it alike)
                    continue
                mb = {k: v[self._share(idx)] for k, v in t.items()}
                loss = multitask_bce(ranker(mb), mb["labels"])
                self.opt_rk.zero_grad()
                loss.backward()
                self._average_sparse_grads("ranker")
                self.opt_rk.step()
                rk_losses.append(loss.item())
            pperm = pos[torch.randperm(len(pos), generator=g)]
            for s in range(0, len(pperm), self.batch_size):
                idx = pperm[s : s + self.batch_size]
                if len(idx) < 2 * self.world:  # in-batch negatives need two rows on every worker
                    continue
                mb = {k: v[self._share(idx)] for k, v in t.items()}
                u, v = two_tower(mb)
                loss = in_batch_softmax(u, v, self.temperature)
                self.opt_tt.zero_grad()
                loss.backward()
                self._average_sparse_grads("two_tower")
                self.opt_tt.step()
                tt_losses.append(loss.item())
        if self.world > 1:
            self._sync_touched()
        return {
            "ranker_loss": float(np.mean(rk_losses)) if rk_losses else float("nan"),
            "two_tower_loss": float(np.mean(tt_losses)) if tt_losses else float("nan"),
            "samples": float(n),
            "ranker_auc_like": like_auc,
        }

    def weights(self) -> dict[str, dict[str, np.ndarray]]:
        """Copies of the model parameters as numpy arrays (safe to ship across processes)."""
        out = {t.name: t.weights() for t in self.extra_tasks}
        if self.base_models:
            out = {"two_tower": {k: v.detach().numpy().copy() for k, v in self.two_tower.state_dict().items()},
                   "ranker": {k: v.detach().numpy().copy() for k, v in self.ranker.state_dict().items()}, **out}
        return out

    def state(self) -> LearnerState:
        """The learner's state record: everything needed to continue training identically."""
        tasks = {task.name: task.state() for task in self.extra_tasks}
        if not self.base_models:
            return LearnerState(version=self.version, samples_seen=self.samples_seen, extra_tasks=tasks)
        return LearnerState(version=self.version, samples_seen=self.samples_seen, extra_tasks=tasks,
                            two_tower=compact_torch(self.two_tower), ranker=compact_torch(self.ranker),
                            opt_tt=compact_torch(self.opt_tt), opt_rk=compact_torch(self.opt_rk))

    def load_state(self, state: LearnerState) -> None:
        if self.base_models:
            self.two_tower.load_state_dict(expand(state.two_tower))
            self.ranker.load_state_dict(expand(state.ranker))
            self.opt_tt.load_state_dict(expand(state.opt_tt))
            self.opt_rk.load_state_dict(expand(state.opt_rk))
        self.version = state.version
        self.samples_seen = state.samples_seen
        for task in self.extra_tasks:
            task.load_state(state.extra_tasks[task.name])

    def state_bytes(self) -> bytes:
        """:meth:`state` serialised (what a checkpoint stores)."""
        buffer = io.BytesIO()
        torch.save(self.state(), buffer)
        return buffer.getvalue()

    def load_state_bytes(self, data: bytes) -> None:
        self.load_state(torch.load(io.BytesIO(data), weights_only=False))
