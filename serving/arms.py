"""The arm registry: the one place that maps arm kinds and channel names to constructors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from simulator.core.config import ArmSpec, DualRecSpec, IHMArmSpec, NextUserSpec
from serving.channels.base import Channel
from serving.channels.basic import FollowingChannel, FreshChannel, PopularChannel, TwoTowerChannel
from serving.channels.dualrec import DualRecChannel, OracleMatchChannel
from serving.channels.ihm import IHMChannel
from serving.channels.next_user import NextUserChannel
from serving.features import FeatureStore
from serving.stack import ArmPolicy
from trainers.arm_context import ArmContext, model_configs
from trainers.losses import NextUserLossConfig
from trainers.models.creator_ranker import CreatorRankerConfig
from trainers.models.ihm import IHMConfig
from trainers.models.next_user import NextUserConfig
from trainers.models.sasrec import SASRecConfig
from trainers.models.two_tower import TwoTowerConfig
from trainers.tasks.base import Task
from trainers.tasks.dualrec import DualRecTask
from trainers.tasks.ihm_online import IHMTask
from trainers.tasks.next_user import NextUserTask


def user_side_channels(spec: ArmSpec) -> list[Channel]:
    """The channels of every arm's user-side stack: two-tower, fresh, popular and following (new items of followed
    creators)."""
    st = spec.stack
    return [TwoTowerChannel(st.two_tower_k), FreshChannel(st.fresh_k, st.fresh_window_hours * 3600, st.fresh_popularity_power),
            PopularChannel(st.popular_k), FollowingChannel(st.follow_k, st.follow_window_hours * 3600)]


def build_base(spec: ArmSpec, ctx: ArmContext) -> ArmPolicy:
    """The base arm: the user-side channels (two-tower, fresh, popular, following), multi-task ranker, FairRec-like
    new-item boost."""
    tt, rk = model_configs(ctx.model, ctx.n_item_dense)
    return ArmPolicy(name=spec.name, stack=spec.stack, slate_size=ctx.slate_size, tt_cfg=tt, rk_cfg=rk,
                     seed=ctx.seed, model_seed=ctx.model_seed, channels=user_side_channels(spec))


def next_user_configs(spec: ArmSpec, ctx: ArmContext) -> tuple[NextUserSpec, NextUserConfig, NextUserLossConfig]:
    nu = spec.next_user or NextUserSpec()
    cfg = NextUserConfig(dim=ctx.model.dim, heads=nu.heads, layers=nu.layers, ff=2 * ctx.model.dim, seq_len=nu.seq_len,
                         id_buckets=ctx.model.id_buckets, n_item_dense=max(1, ctx.n_item_dense), mode=nu.mode,
                         mask_prefix=nu.mask_prefix, use_cls=nu.use_cls, causal=nu.causal)
    loss = NextUserLossConfig(l1=nu.l1, l2=nu.l2, l3=0.0 if nu.mode == "lookalike" else nu.l3, tau=nu.tau,
                              n_random_negatives=nu.n_random_negatives)
    return nu, cfg, loss


def build_next_user(spec: ArmSpec, ctx: ArmContext) -> ArmPolicy:
    """Base stack plus the Next-User Retrieval channel (HNSW over cold items' generated next-user embeddings)."""
    tt, rk = model_configs(ctx.model, ctx.n_item_dense)
    nu, cfg, _ = next_user_configs(spec, ctx)
    st = spec.stack
    channel = NextUserChannel(nu, cfg, tt, m=st.hnsw_m, ef_construction=st.hnsw_ef_construction, ef=st.hnsw_ef,
                              seed=ctx.seed + 1)
    return ArmPolicy(name=spec.name, stack=st, slate_size=ctx.slate_size, tt_cfg=tt, rk_cfg=rk, seed=ctx.seed,
                     model_seed=ctx.model_seed, channels=user_side_channels(spec) + [channel])


def next_user_tasks(spec: ArmSpec, ctx: ArmContext, lr: float, batch_size: int) -> list[Task]:
    tt, _ = model_configs(ctx.model, ctx.n_item_dense)
    nu, cfg, loss = next_user_configs(spec, ctx)
    return [NextUserTask(cfg, loss, tt, lr=lr, batch_size=batch_size, seed=ctx.seed + 2, max_samples=nu.max_train_samples)]


def dualrec_configs(spec: ArmSpec, ctx: ArmContext) -> tuple[DualRecSpec, TwoTowerConfig, CreatorRankerConfig]:
    """DualRec's creator-side two-tower (the arm's two-tower sizes) and its ranker (half the dimension per task)."""
    dr = spec.dualrec or DualRecSpec()
    tt, _ = model_configs(ctx.model, ctx.n_item_dense)
    rk = CreatorRankerConfig(dim=max(4, ctx.model.dim // 2), id_buckets=ctx.model.id_buckets,
                             n_user_dense=FeatureStore.N_USER_DENSE, n_item_dense=max(1, ctx.n_item_dense),
                             hidden=ctx.model.hidden, extra_features=dr.ranker_sa_ef)
    return dr, tt, rk


def build_dualrec(spec: ArmSpec, ctx: ArmContext, channel_cls: type[DualRecChannel] = DualRecChannel) -> ArmPolicy:
    """DualRec: the result-cache channel first (its items are attributed to it), then the base stack's channels."""
    tt, rk = model_configs(ctx.model, ctx.n_item_dense)
    dr, dtt, drk = dualrec_configs(spec, ctx)
    st = spec.stack
    channel = channel_cls(dr, dtt, drk, ctx.slate_size, m=st.hnsw_m, ef_construction=st.hnsw_ef_construction,
                          ef=st.hnsw_ef, seed=ctx.seed + 3)
    return ArmPolicy(name=spec.name, stack=st, slate_size=ctx.slate_size, tt_cfg=tt, rk_cfg=rk, seed=ctx.seed,
                     model_seed=ctx.model_seed, channels=[channel] + user_side_channels(spec))


def build_oracle_match(spec: ArmSpec, ctx: ArmContext) -> ArmPolicy:
    """The positive control: DualRec's UAC, cache, boost and budget (``spec.dualrec``) over candidate users the
    driver picks by the world's truth (:class:`serving.channels.dualrec.oracle_match.OracleMatchChannel`)."""
    return build_dualrec(spec, ctx, OracleMatchChannel)


def dualrec_tasks(spec: ArmSpec, ctx: ArmContext, lr: float, batch_size: int) -> list[Task]:
    dr, tt, rk = dualrec_configs(spec, ctx)
    return [DualRecTask(tt, rk, sa_ef=dr.ranker_sa_ef, lr=lr, batch_size=dr.train_batch_size, seed=ctx.seed + 4,
                        negatives=dr.negatives, max_samples=dr.max_train_samples, auc_table=dr.auc_table)]


def ihm_configs(spec: ArmSpec, ctx: ArmContext) -> tuple[IHMArmSpec, IHMConfig, SASRecConfig]:
    """The IHM item tower and the SASRec user tower at the arm's model dimension."""
    ih = spec.ihm or IHMArmSpec()
    m = ih.model
    item = IHMConfig(dim=ctx.model.dim, heads=m.heads, max_history=m.max_history,
                     id_buckets=ctx.model.id_buckets, n_item_dense=max(1, ctx.n_item_dense),
                     static_only=ih.static_only, history_dropout=m.history_dropout)
    user = SASRecConfig(dim=ctx.model.dim, layers=m.layers, heads=m.attn_heads, ff=2 * ctx.model.dim,
                        dropout=m.dropout, seq_len=m.seq_len)
    return ih, item, user


def build_ihm(spec: ArmSpec, ctx: ArmContext) -> ArmPolicy:
    """Base stack plus the IHM channel (HNSW over cold items' IHM embeddings, re-inferred in real time)."""
    tt, rk = model_configs(ctx.model, ctx.n_item_dense)
    ih, item, user = ihm_configs(spec, ctx)
    st = spec.stack
    channel = IHMChannel(ih, item, user, m=st.hnsw_m, ef_construction=st.hnsw_ef_construction, ef=st.hnsw_ef,
                         seed=ctx.seed + 5)
    return ArmPolicy(name=spec.name, stack=st, slate_size=ctx.slate_size, tt_cfg=tt, rk_cfg=rk, seed=ctx.seed,
                     model_seed=ctx.model_seed, channels=user_side_channels(spec) + [channel])


def ihm_tasks(spec: ArmSpec, ctx: ArmContext, lr: float, batch_size: int) -> list[Task]:
    """The IHM task starts from the serving channel's weights (same seed)."""
    ih, item, user = ihm_configs(spec, ctx)
    return [IHMTask(item, user, tau=ih.model.tau, lr=ih.lr, batch_size=ih.train_batch_size, seed=ctx.seed + 5,
                    max_samples=ih.max_train_samples, train_days=ih.train_days, periodic_retrain=ih.periodic_retrain,
                    epochs=ih.train_epochs, replay_size=ih.replay_size, early_stop_ticks=ih.early_stop_ticks,
                    holdout_share=ih.holdout_share, holdout_size=ih.holdout_size)]


@dataclass(frozen=True)
class ArmKind:
    """How to build an arm of this kind: its serving policy and the extra training tasks of its learner."""

    policy: Callable[[ArmSpec, ArmContext], ArmPolicy]
    tasks: Callable[[ArmSpec, ArmContext, float, int], list[Task]] = lambda spec, ctx, lr, bs: []
    oracle: bool = False  # the driver sends the truth's candidate users with every upload (positive control only)


ARM_KINDS: dict[str, ArmKind] = {
    "base": ArmKind(build_base),
    "next_user": ArmKind(build_next_user, next_user_tasks),
    "dualrec": ArmKind(build_dualrec, dualrec_tasks),
    "ihm": ArmKind(build_ihm, ihm_tasks),
    "oracle_match": ArmKind(build_oracle_match, oracle=True),
}


def arm_kind(spec: ArmSpec) -> ArmKind:
    try:
        return ARM_KINDS[spec.kind]
    except KeyError:
        raise ValueError(f"arm '{spec.name}': unknown kind '{spec.kind}'; known kinds: {sorted(ARM_KINDS)}") from None


def build_arm(spec: ArmSpec, ctx: ArmContext) -> ArmPolicy:
    return arm_kind(spec).policy(spec, ctx)


def arm_tasks(spec: ArmSpec, ctx: ArmContext, lr: float, batch_size: int) -> list[Task]:
    """The extra training tasks of the arm's kind (a :data:`trainers.arm_context.TaskFactory`)."""
    return arm_kind(spec).tasks(spec, ctx, lr, batch_size)
