"""The long-lived Ray Train loop: one TorchTrainer per run keeps every arm's learner and trains tick after tick.

Ray Data has no unbounded source, so the trainer does not get a dataset: its workers pull
commands from a coordinator actor (``train`` a tick's batches, ``snapshot``,
``restore``, ``stop``; every command reaches every worker) and push each tick's weights back to it, from where
the driver publishes them to the Serve deployments. The base models are shared by the arms (trained on their
pooled traffic) or each arm's own, per ``TrainConfig.base_models`` (:class:`ArmLearners`). With
``TrainConfig.num_workers > 1`` the learners are spread over the workers per ``TrainConfig.placement``: either the
shared base models train data-parallel (DDP over the process group Ray Train sets up: each worker a share of every
minibatch) and each arm's strategy learner lives on one worker (round-robin), or (``by_learner``) the shared base
learner trains alone on worker 0 and the strategy learners round-robin on the others; a result is the union of the
workers' parts (:func:`union_parts`).

Ray touchpoints of this module: (1) the coordinator actor, (2) ``TorchTrainer`` in a driver thread (its worker
group, placement and DDP process group). Ray is imported lazily so the in-process runtime can use
:func:`make_learner` without it.
"""

from __future__ import annotations

import os
import threading
import uuid
from functools import partial
from typing import Any, Callable

import numpy as np
import torch

from simulator.core.config import ArmSpec, TrainConfig
from trainers.arm_context import ArmContext, TaskFactory, arm_context, arm_seed, base_model_seed, model_configs
from trainers.learner import BATCH_KEYS, OnlineLearner, concat_batches
from trainers.two_threads import Job, TwoThreads
from trainers.weights import WeightsRef


def make_learner(arm: ArmSpec, ctx: ArmContext, train: TrainConfig, arm_index: int, tasks: TaskFactory,
                 base_models: bool = True) -> OnlineLearner:
    """The arm's learner: two-tower + ranker (unless ``base_models=False``: they are shared), plus the extra
    tasks ``tasks`` gives for its kind (e.g. Next-User; the registry's :func:`serving.arms.arm_tasks`)."""
    tt, rk = model_configs(ctx.model, ctx.n_item_dense)
    actx = arm_context(ctx, arm_index)
    extra = tasks(arm, actx, train.lr, train.batch_size)
    return OnlineLearner(tt, rk, lr=train.lr, batch_size=train.batch_size, temperature=train.temperature,
                         epochs=train.epochs_per_tick, seed=arm_seed(ctx.seed, arm_index), extra_tasks=extra,
                         base_models=base_models, optimizer=train.optimizer)


def tick_seed(learner_seed: int, tick_id: int) -> int:
    return int(np.random.SeedSequence([learner_seed, tick_id, 0x7EA]).generate_state(1)[0])


def _learner_tick(learner: OnlineLearner, batch: dict, tick_id: int) -> tuple[int, dict, dict]:
    """A learner's tick (an arm's, or the shared base learner's): (the version it gave, its stats, its weights)."""
    stats = learner.train_tick(batch, tick_seed(learner.seed, tick_id))
    return learner.version, stats, learner.weights()


SHARED_BASE = "__base__"
"""The shared base learner's key in :meth:`ArmLearners.state` (not a valid arm name)."""


class ArmLearners:
    """Every arm's learners of a run, with the base models per ``TrainConfig.base_models`` (docs/metrics.md):

    - ``per_arm``: each arm's learner holds its own two-tower and ranker and trains them on its own traffic;
    - ``shared``: one base learner trains the two-tower and ranker on the pooled traffic of all arms (in arm
      order) and every arm is served its weights; each arm's learner holds only its strategy models;
    - ``control``: as ``shared``, trained on the control arm's traffic only.

    The same object runs in-process (:class:`simulator.run.runtime.LocalRuntime`) and in the Ray Train worker.
    """

    def __init__(self, arms: list[ArmSpec], ctx: ArmContext, train: TrainConfig, control: str, tasks: TaskFactory,
                 rank: int = 0, world: int = 1):
        """``rank`` of ``world`` Ray Train workers (one process: 0 of 1). With ``placement='data_parallel'`` this
        worker holds the learners of the arms ``i`` with ``i % world == rank`` and a replica of the shared base
        learner, trained data-parallel; with ``'by_learner'`` worker 0 holds the shared base learner alone and worker
        ``r >= 1`` the learners of the arms ``i`` with ``1 + i % (world - 1) == r``."""
        self.mode = train.base_models
        self.names = [a.name for a in arms]
        if self.mode == "control" and control not in self.names:
            raise ValueError(f"base_models='control' needs the control arm '{control}' among the arms {self.names}")
        self.control = control
        self.rank = rank
        per_arm = self.mode == "per_arm"
        self.by_learner = train.placement == "by_learner" and world > 1 and not per_arm

        def mine(i: int) -> bool:
            return 1 + i % (world - 1) == rank if self.by_learner else i % world == rank

        self.learners = {a.name: make_learner(a, ctx, train, i, tasks, base_models=per_arm)
                         for i, a in enumerate(arms) if mine(i)}
        self.base: OnlineLearner | None = None
        self.base_thread = train.base_thread
        self._threads = TwoThreads()
        self.base_part = self.by_learner and rank == 0  # this worker's part of every arm's result is the base models
        if not per_arm and (self.base_part or not self.by_learner):
            tt, rk = model_configs(ctx.model, ctx.n_item_dense)
            self.base = OnlineLearner(tt, rk, lr=train.lr, batch_size=train.batch_size, temperature=train.temperature,
                                      epochs=train.epochs_per_tick, seed=base_model_seed(ctx.seed),
                                      optimizer=train.optimizer)
            if not self.by_learner:
                self.base.shard(rank, world)

    def _base_batch(self, batches: dict[str, dict]) -> dict:
        """The shared base models' training batch: the pooled base features of the arms that train them (every
        arm's, on every worker)."""
        arms = [self.control] if self.mode == "control" else self.names
        return concat_batches([{k: batches[a][k] for k in BATCH_KEYS} for a in arms if batches.get(a)])

    def train_tick(self, tick_id: int, batches: dict[str, dict]) -> dict[str, tuple[int, dict, dict]]:
        """Train on one tick's batches ({arm: batch}); returns {arm: (version, weights, stats)} where the
        weights hold the base models the arm is to serve and its strategy models.

        With ``base_thread`` the learners train on two threads (:mod:`trainers.two_threads`: the shared base learner
        first, and the learners that draw from torch's global generator in this one, in order): the same numbers
        (docs/architecture.md, "Two training threads")."""
        jobs = []
        if self.base is not None:
            base_tick = partial(_learner_tick, self.base, self._base_batch(batches), tick_id)
            jobs.append(Job(SHARED_BASE, base_tick, pinned=False))
        for arm, batch in batches.items():
            if self.base_part or arm not in self.learners:  # base_part: filled in below; else another worker's arm
                continue
            jobs.append(Job(arm, partial(_learner_tick, self.learners[arm], batch, tick_id),
                            pinned=self.learners[arm].draws_global_rng))
        done = self._threads.run(jobs, share=self.base_thread)
        _, base_stats, base_w = done.pop(SHARED_BASE, (None, {}, {}))
        if self.base_part:  # every arm's base part; the worker of its strategy learner adds the version
            return {arm: (None, base_w, base_stats) for arm in batches}
        return {arm: (version, base_w | weights, base_stats | stats) for arm, (version, stats, weights) in done.items()}

    def state(self) -> dict[str, bytes]:
        """This worker's learners' states (the shared one under :data:`SHARED_BASE`, from worker 0: every worker
        holds the same); the union over workers is the run's."""
        out = {a: lr.state_bytes() for a, lr in self.learners.items()}
        if self.base is not None and self.rank == 0:
            out[SHARED_BASE] = self.base.state_bytes()
        return out

    def load_state(self, state: dict[str, bytes]) -> None:
        """Load this worker's learners from the run's learner states (every worker's union)."""
        expected = set(self.names) | ({SHARED_BASE} if self.mode != "per_arm" else set())
        if set(state) != expected:
            raise ValueError(f"learner checkpoint holds {sorted(state)}, this run's learners are {sorted(expected)} "
                             f"(was it written with another train.base_models than '{self.mode}'?)")
        for a, lr in self.learners.items():
            lr.load_state_bytes(state[a])
        if self.base is not None:
            self.base.load_state_bytes(state[SHARED_BASE])


def union_parts(parts: dict[int, Any]) -> Any:
    """The workers' parts of a result ({rank: part}) as one. Per-arm results ({arm: (version, weights, stats)})
    are their union; an arm two workers trained (placement 'by_learner': the base models on worker 0, the strategy
    models on another) is merged in rank order, as one process makes it: the strategy learner's version, the
    weights and the stats of the base part first. Other results are worker 0's."""
    if not all(isinstance(part, dict) for part in parts.values()):
        return parts[0]
    out: dict = {}
    for rank in sorted(parts):
        for name, value in parts[rank].items():
            if name not in out or not isinstance(value, tuple):
                out[name] = value
                continue
            (v0, w0, s0), (v1, w1, s1) = out[name], value
            weights = w0.join(w1) if isinstance(w0, WeightsRef) else w0 | w1
            out[name] = (v1 if v0 is None else v0, weights, s0 | s1)
    return out


COORDINATOR_PREFIX = "coldsim-train-coordinator-"


class TrainerLost(RuntimeError):
    """The Ray Train workers' learners are gone: the online loop stopped (a worker died) or a worker started over
    blank. The driver restores the learners into a new trainer from the last checkpoint, or stops."""


class _Coordinator:
    """Command queues to the train workers (one per worker: every command reaches all) and the mailbox of their
    results (an async Ray actor): a result is ready when every worker posted its part, and is their union.

    Commands carry the driver's sequence number and reach the workers in that order. Ray does not order the tasks
    of an async actor: two ``put`` calls the driver made one after the other (tick 0's batches, then tick 1's)
    could run the other way round (measured: a tiny run's learners trained tick 1 before tick 0 in about one run
    in three, and its metrics moved), so the coordinator holds a command until every earlier one has arrived."""

    def __init__(self, world: int = 1):
        self.world = world
        self._next_seq = 0  # the sequence number of the next command to hand out
        self._held: dict[int, tuple] = {}  # commands that arrived before an earlier one
        self._queues = None
        self._results: dict[Any, dict[int, Any]] = {}
        self._events: dict[Any, Any] = {}
        self._incarnations: dict[int, str] = {}  # rank -> the worker process that has been serving it
        self.restarted: str | None = None  # why the run cannot go on: a worker started over with blank learners
        self._pids: dict[int, int] = {}  # rank -> the worker's process id (diagnostics; the fault tests kill it)
        self._taken: dict[int, int] = {}  # rank -> how many commands the worker has taken
        self._stopped = False

    def _q(self, rank: int):
        import asyncio

        if self._queues is None:
            self._queues = [asyncio.Queue() for _ in range(self.world)]
        return self._queues[rank]

    def _event(self, key):
        import asyncio

        if key not in self._events:
            self._events[key] = asyncio.Event()
        return self._events[key]

    async def put(self, seq: int, command: tuple) -> None:
        """Command number ``seq`` of the driver (0, 1, 2, ...): queued for every worker once all before it are."""
        if self._stopped:
            return
        if seq < self._next_seq or seq in self._held:
            raise ValueError(f"train command number {seq} was sent twice")
        self._held[seq] = command
        while self._next_seq in self._held:
            command = self._held.pop(self._next_seq)
            self._next_seq += 1
            for rank in range(self.world):
                self._q(rank).put_nowait(command)

    async def get(self, rank: int = 0, incarnation: str | None = None) -> tuple:
        """The next command for worker ``rank``. A new ``incarnation`` for a rank that had one means Ray Train
        restarted the worker group (e.g. after a start-up timeout): its learners start over, blank, and commands
        the old one took are lost. The run is then stopped (every waiting result raises) rather than continued
        with blank learners, and the new worker is told to stop."""
        if incarnation is not None and self._incarnations.setdefault(rank, incarnation) != incarnation:
            if self.restarted is None:
                self.restarted = (f"the Ray Train worker of rank {rank} was restarted during the run (its learners "
                                  "started over and lost their state)")
            for event in self._events.values():
                event.set()
            return ("stop",)
        command = await self._q(rank).get()
        self._taken[rank] = self._taken.get(rank, 0) + 1
        return command

    async def stop(self) -> None:
        """Stop the workers at the end of a run without the commands they have not taken yet: the ticks submitted
        last are never published (their weights would be served after the run's end), so training them only
        delayed the run's end, by the worker's start-up too when the run was short. A command that some worker
        has taken stays queued for the others, so workers that train together (DDP) take the same commands and
        none waits in a collective for a peer that stopped. Commands sent after the stop are dropped."""
        self._stopped = True
        self._held.clear()
        cut = max(self._taken.values(), default=0)
        for rank in range(self.world):
            queue = self._q(rank)
            kept = [queue.get_nowait() for _ in range(queue.qsize())][: cut - self._taken.get(rank, 0)]
            for command in kept + [("stop",)]:
                queue.put_nowait(command)

    async def put_result(self, key, value, rank: int = 0) -> None:
        parts = self._results.setdefault(key, {})
        parts[rank] = value  # small: weights travel as object references (WeightsRef)
        if len(parts) == self.world:
            self._event(key).set()

    async def is_restarted(self) -> str | None:
        return self.restarted

    async def hello(self, rank: int, pid: int) -> None:
        self._pids[rank] = pid

    async def pids(self) -> dict[int, int]:
        return dict(self._pids)

    async def get_result(self, key):
        if self.restarted is None:
            await self._event(key).wait()
        if self.restarted is not None:
            raise TrainerLost(self.restarted)
        self._events.pop(key, None)
        return union_parts(self._results.pop(key))


def train_loop_per_worker(config: dict) -> None:
    """Runs inside the Ray Train worker until told to stop."""
    import ray
    import ray.train

    torch.set_num_threads(1)
    coord = config["coordinator"]
    ctx: ArmContext = config["arm_ctx"]
    train_cfg: TrainConfig = config["train"]
    arms: list[ArmSpec] = config["arms"]
    rank = ray.train.get_context().get_world_rank()
    world = ray.train.get_context().get_world_size()
    learners = ArmLearners(arms, ctx, train_cfg, config["control"], config["tasks"], rank=rank, world=world)
    incarnation = uuid.uuid4().hex  # this process's learners: a restarted worker has another (_Coordinator.get)
    ray.get(coord.hello.remote(rank, os.getpid()))
    while True:
        cmd = ray.get(coord.get.remote(rank, incarnation))
        kind = cmd[0]
        if kind == "stop":
            break
        if kind == "train":
            _, tick_id, batches = cmd
            out = learners.train_tick(tick_id, batches)
            # the weights go to the object store once (the shared base model's arrays once for all arms: one object);
            # the coordinator and the driver only pass the reference on to the Serve replicas
            tick_ref = ray.put({arm: weights for arm, (_, weights, _) in out.items()})
            out = {arm: (version, WeightsRef.of(tick_ref, arm), stats) for arm, (version, _, stats) in out.items()}
            ray.get(coord.put_result.remote(("train", tick_id), out, rank))
            # no ray.train.report: Ray Train keeps only metrics that come with a Ray Train checkpoint, and its
            # controller takes a report only at its health-check poll (every 2 s), so a report per tick blocked
            # the worker until then (docs/architecture.md); the ticks' stats reach the driver with their weights
        elif kind == "snapshot":
            ray.get(coord.put_result.remote(("snapshot", cmd[1]), learners.state(), rank))
        elif kind == "restore":
            learners.load_state(cmd[1])
            ray.get(coord.put_result.remote(("restored", cmd[2]), True, rank))


class OnlineTrainer:
    """Driver-side handle: starts the TorchTrainer in a thread, sends ticks, waits for their weights."""

    def __init__(self, ctx: ArmContext, train: TrainConfig, arms: list[ArmSpec], control: str, storage_path: str,
                 tasks: TaskFactory):
        import ray
        from ray.train import RunConfig, ScalingConfig
        from ray.train.torch import TorchTrainer

        self._ray = ray
        # named, so tools (and the fault tests) can find a run's workers: COORDINATOR_PREFIX + a run-unique suffix
        self.coord = (ray.remote(num_cpus=0)(_Coordinator).options(name=f"{COORDINATOR_PREFIX}{uuid.uuid4().hex[:8]}")
                      .remote(train.num_workers))
        self.trainer = TorchTrainer(
            train_loop_per_worker,
            train_loop_config={"coordinator": self.coord, "arm_ctx": ctx, "train": train, "arms": arms,
                               "control": control, "tasks": tasks},
            scaling_config=ScalingConfig(num_workers=train.num_workers,
                                         resources_per_worker={"CPU": train.cpus_per_worker}),
            run_config=RunConfig(name=f"coldsim_online_{uuid.uuid4().hex[:8]}", storage_path=storage_path),
        )
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._fit, name="coldsim-train", daemon=True)
        self._thread.start()
        self._seq = 0  # the next command's sequence number

    def _fit(self) -> None:
        try:
            self.trainer.fit()
        except BaseException as exc:  # surfaced to the driver on its next wait
            self.error = exc

    @property
    def alive(self) -> bool:
        """Whether the learners are still the run's: the online loop runs and no worker started over."""
        return self._thread.is_alive() and self._ray.get(self.coord.is_restarted.remote()) is None

    def _wait(self, ref, what: str):
        while True:
            try:
                return self._ray.get(ref, timeout=1.0)
            except self._ray.exceptions.GetTimeoutError:
                if not self._thread.is_alive():
                    raise TrainerLost(f"the Ray Train online loop stopped while waiting for {what}: {self.error!r}") from self.error
            except self._ray.exceptions.RayTaskError as exc:
                if isinstance(exc.cause, TrainerLost):
                    raise exc.cause from None
                raise

    def _send(self, command: tuple) -> None:
        """A command to every worker, numbered: they take the commands in the order they were sent (_Coordinator).
        A snapshot's or a restore's result is keyed by its command's number (``self._seq`` before sending)."""
        self.coord.put.remote(self._seq, command)
        self._seq += 1

    def submit(self, tick_id: int, batches: dict) -> None:
        self._send(("train", tick_id, batches))

    def collect(self, tick_id: int) -> dict:
        """{arm: (version, WeightsRef, stats)} of a trained tick."""
        return self._wait(self.coord.get_result.remote(("train", tick_id)), f"tick {tick_id}")

    def request_snapshot(self) -> Callable[[], dict[str, bytes]]:
        """Send the snapshot command and return at once; calling the result waits for the learners' states (the
        driver meanwhile takes the Serve replicas' snapshots: both serialise at the same time)."""
        n = self._seq  # this command's number
        self._send(("snapshot", n))
        ref = self.coord.get_result.remote(("snapshot", n))
        return lambda: self._wait(ref, "a snapshot")

    def restore(self, state: dict[str, bytes]) -> None:
        n = self._seq  # this command's number
        self._send(("restore", state, n))
        self._wait(self.coord.get_result.remote(("restored", n)), "a restore")

    def worker_pids(self) -> dict[int, int]:
        """rank -> the Train worker's process id."""
        return self._ray.get(self.coord.pids.remote())

    def stop(self, timeout: float = 60.0) -> None:
        """End the online loop at the run's end: the ticks not yet trained are dropped (_Coordinator.stop)."""
        if self._thread.is_alive():
            self.coord.stop.remote()
            self._thread.join(timeout)

    def abandon(self) -> None:
        """Let a trainer whose learners are lost go: its loop is told to stop and its coordinator is killed."""
        try:
            self.stop(timeout=10)
        finally:
            self._ray.kill(self.coord)
