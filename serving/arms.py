"""The arm registry: the one place that maps arm kinds and channel names to constructors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from simulator.config import ArmSpec, ModelConfig
from serving.channels.basic import FreshChannel, PopularChannel, TwoTowerChannel
from serving.features import FeatureStore
from serving.stack import ArmPolicy
from trainers.models.ranker import RankerConfig
from trainers.models.two_tower import TwoTowerConfig


@dataclass(frozen=True)
class ArmContext:
    """What every arm constructor needs besides its spec."""

    model: ModelConfig
    slate_size: int
    n_item_dense: int
    seed: int


def model_configs(model: ModelConfig, n_item_dense: int) -> tuple[TwoTowerConfig, RankerConfig]:
    n_item_dense = max(1, n_item_dense)
    tt = TwoTowerConfig(dim=model.dim, id_buckets=model.id_buckets, n_user_dense=FeatureStore.N_USER_DENSE,
                        n_item_dense=n_item_dense, hidden=model.hidden)
    rk = RankerConfig(dim=model.dim, id_buckets=model.id_buckets, n_user_dense=FeatureStore.N_USER_DENSE,
                      n_item_dense=n_item_dense, n_pair_dense=FeatureStore.N_PAIR_DENSE, hidden=model.hidden)
    return tt, rk


def user_side_channels(spec: ArmSpec) -> list:
    st = spec.stack
    return [TwoTowerChannel(st.two_tower_k), FreshChannel(st.fresh_k, st.fresh_window_hours * 3600),
            PopularChannel(st.popular_k)]


def build_base(spec: ArmSpec, ctx: ArmContext) -> ArmPolicy:
    """The base arm: two-tower + fresh + popular channels, multi-task ranker, FairRec-like new-item boost."""
    tt, rk = model_configs(ctx.model, ctx.n_item_dense)
    return ArmPolicy(name=spec.name, stack=spec.stack, slate_size=ctx.slate_size, tt_cfg=tt, rk_cfg=rk,
                     seed=ctx.seed, channels=user_side_channels(spec))


ARM_KINDS: dict[str, Callable[[ArmSpec, ArmContext], ArmPolicy]] = {
    "base": build_base,
}


def arm_seed(base: int, arm_index: int) -> int:
    """Each arm's models get their own seed, derived from the run seed and the arm's position."""
    return int(np.random.SeedSequence([base, arm_index, 0xA12]).generate_state(1)[0])


def arm_context(ctx: ArmContext, arm_index: int) -> ArmContext:
    return ArmContext(model=ctx.model, slate_size=ctx.slate_size, n_item_dense=ctx.n_item_dense,
                      seed=arm_seed(ctx.seed, arm_index))


def build_arm(spec: ArmSpec, ctx: ArmContext) -> ArmPolicy:
    try:
        ctor = ARM_KINDS[spec.kind]
    except KeyError:
        raise ValueError(f"arm '{spec.name}': unknown kind '{spec.kind}'; known kinds: {sorted(ARM_KINDS)}") from None
    return ctor(spec, ctx)
