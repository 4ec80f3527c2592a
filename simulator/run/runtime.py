"""The execution seam: where arms are served and trained. In-process (:class:`LocalRuntime`) or on Ray.

The driver (:mod:`simulator.run.loop`) talks only to this interface, a tick at a time, with every
arm's batch in one call so a Ray runtime can run the arms concurrently. The Ray runtime
(:mod:`simulator.run.ray_runtime`) implements the same methods with Ray Serve, Ray Train and Ray
Data; the local one calls the same plain classes directly, so both give the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from simulator.core.storage import Location
from simulator.core.config import ArmSpec, TrainConfig
from simulator.world.replay import ArrowDayReader
from serving.arms import arm_tasks, build_arm
from trainers.arm_context import ArmContext, arm_context
from serving.shards import ShardedArm
from serving.stack import ArmPolicy, Slates
from trainers.online import ArmLearners

ItemBatch = dict[str, np.ndarray]  # item_id, creator_id, upload_ts, category, dense (+ oracle_users, oracle_scores)


class ComponentLost(RuntimeError):
    """A part of the runtime lost the run's state (an arm replica died or was restarted, the Train workers'
    learners are gone). The driver recovers in place from the last checkpoint (``Runtime.recover`` then
    ``Simulation.restore_latest``: the days since are played again, deterministically) or, with no checkpoint
    yet, stops (docs/reliability.md)."""


def oracle_payload(batch: ItemBatch) -> tuple[np.ndarray, np.ndarray] | None:
    """The truth's candidate users and scores of an upload batch (positive-control arms only), else None."""
    return (batch["oracle_users"], batch["oracle_scores"]) if "oracle_users" in batch else None
TrainBatch = dict[str, np.ndarray]


@dataclass(frozen=True)
class RuntimeSpec:
    """Everything a runtime needs to build the arms and their learners."""

    arms: tuple[ArmSpec, ...]
    arm_ctx: ArmContext
    train: TrainConfig
    events_root: Location  # the log's day partitions (simulator.world.replay.write_log)
    t0: int = 0
    control: str = ""  # the control arm (trains the shared base models when train.base_models == 'control')
    storage: Location | None = None  # the run directory; Ray Train keeps its files under storage/train
    arm_replicas: int = 1  # shards per arm (serving.shards): the same metrics for any number


def make_policy(spec: RuntimeSpec, arm_index: int) -> ArmPolicy | ShardedArm:
    """The arm's policy; with ``arm_replicas`` > 1, that many identical shards of it (:class:`ShardedArm`)."""
    build = lambda: build_arm(spec.arms[arm_index], arm_context(spec.arm_ctx, arm_index))  # noqa: E731
    return build() if spec.arm_replicas == 1 else ShardedArm([build() for _ in range(spec.arm_replicas)])


class Runtime(Protocol):
    """What the driver needs; every method takes or returns one entry per arm name."""

    def read_day(self, day: int): ...
    def upload(self, items: dict[str, ItemBatch]) -> None: ...
    def recommend(self, requests: dict[str, tuple[np.ndarray, np.ndarray, int]]) -> dict[str, Slates]: ...
    def feedback(self, events: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]) -> None: ...
    def submit_training(self, tick_id: int, batches: dict[str, TrainBatch]) -> None: ...
    def collect_weights(self, tick_id: int) -> dict[str, tuple[int, dict, dict]]: ...
    def fetch_weights(self, ready: dict[int, dict]) -> dict[int, dict]: ...  # collected weights as arrays (checkpoints)
    def publish(self, weights: dict[str, tuple[int, dict]], ts: int) -> None: ...
    def check_arms(self) -> None: ...  # raise if an arm lost its state (a restarted Serve replica)
    def end_day(self, ts: int) -> dict[str, dict[str, float]]: ...
    def snapshot(self) -> dict[str, dict[str, bytes]]: ...  # {"policies": {arm: bytes}, "learners": {name: bytes}}
    def restore(self, state: dict[str, dict[str, bytes]]) -> None: ...
    def release_arms(self) -> None: ...  # the run is over: HTTP clients may now upload and end days (docs/serving.md)
    def recover(self) -> None: ...  # after ComponentLost: every part answers again (blank); restore() follows
    def shutdown(self) -> None: ...


class LocalRuntime:
    """Arms and learners as plain objects in this process: fast unit tests, exact reference numbers."""

    def __init__(self, spec: RuntimeSpec):
        torch.set_num_threads(1)  # the same arithmetic as a one-thread Serve replica / Train worker
        self.spec = spec
        self.names = [a.name for a in spec.arms]
        self.policies = {a.name: make_policy(spec, i) for i, a in enumerate(spec.arms)}
        self.learners = ArmLearners(list(spec.arms), spec.arm_ctx, spec.train, spec.control, arm_tasks)
        self.reader = ArrowDayReader(spec.events_root)
        self._trained: dict[int, dict[str, tuple[int, dict, dict]]] = {}

    def read_day(self, day: int):
        return self.reader.read_day(day)

    def upload(self, items):
        for arm, b in items.items():
            self.policies[arm].upload_items(b["item_id"], b["creator_id"], b["upload_ts"], b["category"], b["dense"],
                                            oracle=oracle_payload(b))

    def recommend(self, requests):
        return {arm: self.policies[arm].recommend(u, t, seed) for arm, (u, t, seed) in requests.items()}

    def feedback(self, events):
        for arm, (u, i, t, y) in events.items():
            self.policies[arm].feedback(u, i, t, y)

    def submit_training(self, tick_id, batches):
        self._trained[tick_id] = self.learners.train_tick(tick_id, batches)

    def collect_weights(self, tick_id):
        return self._trained.pop(tick_id)

    def fetch_weights(self, ready):
        return ready  # in this process the weights are arrays already

    def publish(self, weights, ts):
        for arm, (version, w) in weights.items():
            self.policies[arm].set_weights(version, w, ts)

    def check_arms(self):
        pass  # the arms live in this process: they cannot restart on their own

    def end_day(self, ts):
        return {arm: p.end_day(ts) for arm, p in self.policies.items()}

    def snapshot(self):
        return {"policies": {arm: p.snapshot() for arm, p in self.policies.items()}, "learners": self.learners.state()}

    def restore(self, state):
        for arm in self.names:
            self.policies[arm].restore(state["policies"][arm])
        self.learners.load_state(state["learners"])

    def release_arms(self):
        pass  # no HTTP in process

    def recover(self):
        pass  # nothing here can be lost

    def shutdown(self):
        pass
