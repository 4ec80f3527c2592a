"""What every arm's models are built from besides the arm's spec: the run's model sizes, seeds and feature widths.

Shared by the serving registry (:mod:`serving.arms`) and the learners (:mod:`trainers.online`), so neither
imports the other."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from simulator.core.config import ArmSpec, ModelConfig
from simulator.core.schema import N_PAIR_DENSE, N_USER_DENSE
from trainers.models.ranker import RankerConfig
from trainers.models.two_tower import TwoTowerConfig
from trainers.tasks.base import Task


@dataclass(frozen=True)
class ArmContext:
    """What every arm constructor needs besides its spec."""

    model: ModelConfig
    slate_size: int
    n_item_dense: int
    seed: int
    shared_base: bool = False  # the base models are one learner's (TrainConfig.base_models != 'per_arm')
    model_seed: int | None = None  # initial weights of the arm's base models (arm_context sets it)


def model_configs(model: ModelConfig, n_item_dense: int) -> tuple[TwoTowerConfig, RankerConfig]:
    n_item_dense = max(1, n_item_dense)
    tt = TwoTowerConfig(dim=model.dim, id_buckets=model.id_buckets, n_user_dense=N_USER_DENSE,
                        n_item_dense=n_item_dense, hidden=model.hidden)
    rk = RankerConfig(dim=model.dim, id_buckets=model.id_buckets, n_user_dense=N_USER_DENSE,
                      n_item_dense=n_item_dense, n_pair_dense=N_PAIR_DENSE, hidden=model.hidden)
    return tt, rk


def arm_seed(base: int, arm_index: int) -> int:
    """Each arm's models get their own seed, derived from the run seed and the arm's position."""
    return int(np.random.SeedSequence([base, arm_index, 0xA12]).generate_state(1)[0])


def base_model_seed(run_seed: int) -> int:
    """The seed of the shared base models: the same for every arm, so all arms start from the same weights."""
    return int(np.random.SeedSequence([run_seed, 0xBA5E]).generate_state(1)[0])


def arm_context(ctx: ArmContext, arm_index: int) -> ArmContext:
    """The context of the arm at ``arm_index`` of a run whose context is ``ctx``: its own seed, and the initial
    base-model weights either shared by every arm or its own."""
    seed = arm_seed(ctx.seed, arm_index)
    return ArmContext(model=ctx.model, slate_size=ctx.slate_size, n_item_dense=ctx.n_item_dense, seed=seed,
                      shared_base=ctx.shared_base, model_seed=base_model_seed(ctx.seed) if ctx.shared_base else seed)


TaskFactory = Callable[[ArmSpec, ArmContext, float, int], list[Task]]
"""(arm spec, arm context, learning rate, batch size) -> the arm's extra training tasks (the registry's
:func:`serving.arms.arm_tasks`); handed to the learners so trainers never import the serving registry."""
