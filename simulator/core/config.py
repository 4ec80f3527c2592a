"""Typed, frozen configuration of a simulation run (pydantic): the :class:`Scenario` and every part it is made of.

Bottom of the import graph next to :mod:`simulator.core.schema`. A scenario (``scenarios/``) is one
:class:`Scenario` value; everything below it reads these types, never free-form dicts. The platform and world
(:mod:`simulator.core.platform_config`) and the arms (:mod:`simulator.core.arm_config`) have their own modules;
every config type is importable from here.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from simulator.core.arm_config import ArmSpec, DualRecSpec, IHMArmSpec, IHMSpec, NextUserSpec, StackConfig
from simulator.core.frozen import FrozenConfig
from simulator.core.platform_config import TINY_UPLOADS, SyntheticConfig, WorldConfig

__all__ = [
    "ArmSpec", "DualRecSpec", "IHMArmSpec", "IHMOfflineConfig", "IHMSpec", "MetricsConfig", "ModelConfig", "NextUserSpec",
    "OfflineConfig", "RuntimeKind", "ScaleConfig", "Scenario", "ServeConfig", "StackConfig", "SyntheticConfig",
    "TINY_UPLOADS", "TrainConfig", "WorldConfig",
]


class ModelConfig(FrozenConfig):
    """Sizes of the arms' two-tower and ranking models."""

    dim: int = Field(32, ge=4)
    id_buckets: int = Field(1 << 15, ge=16, description="hashed id-embedding buckets (new ids need no resize)")
    hidden: int = Field(64, ge=4)


class TrainConfig(FrozenConfig):
    """The online learning loop (one long-lived Ray TorchTrainer per run)."""

    batch_size: int = Field(256, ge=8, description="minibatch of the online updates: a tick of a few thousand exposures "
                            "per arm must still give tens of optimiser steps (at 2,048 the user-side ranker stayed at "
                            "chance for most of a run, docs/performance.md)")
    lr: float = Field(3e-3, gt=0)
    optimizer: Literal["adam", "lazy_adam"] = Field(
        "adam", description="the base models' optimiser (trainers/optim.py). 'adam': fused dense Adam over every "
        "parameter; 'lazy_adam': the hashed-id tables give sparse gradients and only the rows a minibatch looked up "
        "are updated (torch SparseAdam, TensorFlow's LazyAdam), the rest with dense Adam. A different optimiser, so "
        "the metrics change; faster training (docs/performance.md, 'Lazy Adam (opt-in)')")
    epochs_per_tick: int = Field(1, ge=1)
    publish_delay_ticks: int = Field(1, ge=0, description="ticks between the end of a training tick and serving its weights")
    num_workers: int = Field(1, ge=1, le=64, description="Ray Train workers. With more than one, the shared base "
                             "models train data-parallel (DDP: every worker a share of each minibatch, gradients "
                             "averaged) and the arms' strategy learners are placed on the workers round-robin "
                             "(docs/architecture.md, 'Data-parallel training'); the local runtime always trains in one "
                             "process")
    placement: Literal["data_parallel", "by_learner"] = Field(
        "data_parallel", description="how num_workers > 1 share the learners. 'data_parallel': the shared base "
        "models train with DDP on every worker (each a share of every minibatch) and the strategy learners go "
        "round-robin; 'by_learner': no learner is split: the shared base learner trains alone on worker 0 and the "
        "arms' strategy learners go round-robin on workers 1..N-1, so every learner trains exactly as in one "
        "process (the metrics equal one worker's) while the learners run side by side (docs/architecture.md, "
        "'Learners side by side'); it needs shared base models")
    cpus_per_worker: float = Field(1.0, gt=0, description="CPUs each Ray Train worker reserves; below 1 lets "
                                   "several workers share a small machine's cores (Ray Data's reads need some left)")
    temperature: float = Field(0.1, gt=0)
    base_thread: bool = Field(True, description="a Train worker (or the local runtime) trains a tick's learners on "
                              "two threads (torch's kernels run without the GIL), the shared base learner first and "
                              "the learners that draw from torch's global generator (IHM) in the worker's own: the "
                              "same numbers as one after another, in less wall (docs/architecture.md, 'Two training "
                              "threads')")
    base_models: Literal["shared", "control", "per_arm"] = Field(
        "shared", description="the user-side base models (two-tower, multi-task ranker). 'shared': one learner "
        "trained on the pooled traffic of all arms serves the same weights to every arm, and arms differ only by "
        "their strategy (an industrial co-diverted test); 'control': the same, trained on the control arm's "
        "traffic only (no treatment traffic reaches the base models); 'per_arm': every arm trains its own on its "
        "own traffic from its own initialisation (arms then also differ in model quality by chance; "
        "docs/metrics.md, 'Base models')")

    @model_validator(mode="after")
    def _check_placement(self) -> "TrainConfig":
        if self.placement == "by_learner" and self.base_models == "per_arm":
            raise ValueError("train.placement='by_learner' puts the shared base learner on a worker of its own; with "
                             "train.base_models='per_arm' there is none (each arm's learner holds its base models): "
                             "use placement='data_parallel'")
        return self


class MetricsConfig(FrozenConfig):
    """Thresholds of the metrics (docs/metrics.md) and the bootstrap behind the confidence intervals.

    ExpoReach thresholds are either fixed (``expo_k``, metrics ``expo_reach_<K>``) or derived from all
    arms' items after the run (``expo_k=None``: one per ``expo_quantiles``, metrics ``expo_reach_q<pct>``);
    :func:`simulator.metrics.expo_reach.resolve_expo_k` fixes derived ones into ``expo_thresholds``.
    """

    expo_k: list[int] | None = Field(None, description="fixed ExpoReach thresholds; None = derived from the arms' items")
    expo_quantiles: list[float] = Field(default_factory=lambda: [0.5, 0.9, 0.99], description="derived K_q: the "
                                        "q-quantile of the per-item exposures within the window, all arms' items pooled")
    expo_k_min: int | None = Field(None, ge=1, description="floor of a derived K; None = the caller's default "
                                   "(the simulation: the largest DualRec target count + 1)")
    expo_window_days: float = Field(3.0, gt=0, description="an item counts its exposures within this many days "
                                    "after upload; items whose window ends after the run are censored")
    expo_thresholds: dict[str, int] | None = Field(None, description="resolved derived thresholds, metric name -> "
                                                   "K; set by resolve_expo_k, not by hand")
    expo_k_arms: list[str] | None = Field(None, description="the arms whose pooled exposures the resolved thresholds "
                                          "were derived from; set by resolve_expo_k. A comparison of exactly these arms "
                                          "re-derives K in every bootstrap replicate (docs/metrics.md)")
    cold_age_hours: float = Field(24.0, gt=0)
    cold_max_exposures: int = Field(100, ge=1)
    bootstrap_samples: int = Field(500, ge=50)
    bootstrap_two_way: bool = Field(True, description="sums over exposures resample users and creators together "
                                    "(False: one side only, as the metric's unit)")
    ci_level: float = Field(0.95, gt=0, lt=1)

    @field_validator("expo_k")
    @classmethod
    def _positive_unique_k(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and (any(k < 1 for k in v) or len(set(v)) != len(v)):
            raise ValueError(f"expo_k must be distinct integers >= 1, got {v}")
        return v

    @field_validator("expo_quantiles")
    @classmethod
    def _quantiles(cls, v: list[float]) -> list[float]:
        if any(not 0 < q <= 1 for q in v) or len({round(q, 8) for q in v}) != len(v):
            raise ValueError(f"expo_quantiles must be distinct values in (0, 1], got {v}")
        return v

    @model_validator(mode="after")
    def _resolved_thresholds(self) -> "MetricsConfig":
        t = self.expo_thresholds
        if t is not None:
            if self.expo_k is not None:
                raise ValueError("expo_thresholds resolves derived thresholds: it cannot be set with a fixed expo_k")
            bad = {n: k for n, k in t.items() if not n.startswith("expo_reach_") or k < 1}
            if bad:
                raise ValueError(f"expo_thresholds maps 'expo_reach_*' names to K >= 1, got {bad}")
        return self


class ServeConfig(FrozenConfig):
    """Where the HTTP ingress listens when enabled (loopback by default), and where the arms' replicas go."""

    host: str = "127.0.0.1"
    port: int = Field(8765, ge=0, le=65535)
    http: bool = False
    arm_resources: dict[str, dict[str, float]] = Field(
        default_factory=dict, description="arm -> extra Ray resources its Serve replica requires, to place arms on "
        "chosen nodes of a cluster (nodes started with e.g. `ray start --resources='{\"arms_a\": 8}'`); arms not "
        "named go wherever Serve puts them")

    arm_replicas: int = Field(1, ge=1, le=64, description="Serve replicas per arm, each owning a disjoint shard of the "
                              "users (a stable hash of the user id) and holding the arm's whole item-side state; any "
                              "number gives the same metrics as one (docs/architecture.md, Sharded arms)")
    shard_resources: list[dict[str, float]] = Field(
        default_factory=list, description="extra Ray resources shard k of every arm requires (entry k), to spread "
        "an arm's shards over chosen nodes; empty: wherever Serve puts them")

    @field_validator("arm_resources")
    @classmethod
    def _amounts(cls, value: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        for arm, resources in value.items():
            bad = {name: amount for name, amount in resources.items() if not amount > 0}
            if bad:
                raise ValueError(f"serve.arm_resources['{arm}']: amounts must be > 0, got {bad}")
        return value

    @model_validator(mode="after")
    def _shards(self) -> "ServeConfig":
        if self.shard_resources and len(self.shard_resources) != self.arm_replicas:
            raise ValueError(f"serve.shard_resources has {len(self.shard_resources)} entries for arm_replicas="
                             f"{self.arm_replicas}: give one per shard, or none")
        for k, resources in enumerate(self.shard_resources):
            bad = {name: amount for name, amount in resources.items() if not amount > 0}
            if bad:
                raise ValueError(f"serve.shard_resources[{k}]: amounts must be > 0, got {bad}")
        return self


class ScaleConfig(FrozenConfig):
    """Overrides a named scale applies to a scenario (``--scale tiny``)."""

    synthetic: SyntheticConfig
    days: int | None = None
    ticks_per_day: int | None = Field(None, ge=1, le=96)
    expo_k: list[int] | None = None
    expo_window_days: float | None = Field(None, gt=0, description="ExpoReach's age window at this scale (a run of a "
                                           "few days needs a window shorter than the default's)")
    train_batch_size: int | None = Field(None, ge=8)


class OfflineConfig(FrozenConfig):
    """An offline protocol on the log (no A/B traffic): time split, training passes, evaluation."""

    train_frac: float = Field(0.7, gt=0, lt=1, description="days before this fraction of the log train, later days test")
    epochs: int = Field(1, ge=1, description="passes over the training days (in time order each pass)")
    samples_per_step: int = Field(4096, ge=16, description="training samples per step of the stream")
    batch_size: int = Field(256, ge=8, description="minibatch size of the offline training steps")
    negatives_per_positive: float = Field(1.0, ge=0, description="exposed-not-interacted samples kept per positive "
                                          "(a deterministic subsample; the CE term's negatives)")
    max_eval: int = Field(4000, ge=10, description="held-out next-user events evaluated (deterministic sample)")
    recall_k: list[int] = Field(default_factory=lambda: [20, 50])
    workers: int = Field(0, ge=0, description="variants trained at once, each in a fresh process (0: one per CPU "
                         "core); 1 trains them one after another in this process")


class IHMOfflineConfig(FrozenConfig):
    """The IHM paper's offline decay protocol (section 5.1): train once before the median timestamp, then
    score every later positive in 5 equal time windows with no retraining. The variants are the arms,
    by ``kind``: ihm, ihm_frozen, ihm_static, transductive, sasrec (``simulator.run.offline_ihm.VARIANTS``)."""

    windows: int = Field(5, ge=1, description="windows the later half is cut into (see windows_by)")
    windows_by: Literal["time", "count", "horizon"] = Field(
        "time", description="time: equal durations over the whole later half (the paper's); count: the same number "
        "of test positives in each; horizon: equal durations over the first horizon_days after the split only")
    horizon_days: float = Field(30.0, gt=0, description="with windows_by='horizon': the days after the split scored")
    tail_max: int = Field(5, ge=1, description="tail items have fewer than this many training interactions (X)")
    k: int = Field(10, ge=1, description="cut-off of HitRate@K and NDCG@K")
    epochs: int = Field(20, ge=1, description="passes over the training positives (shuffled user sequences); with "
                        "epoch_selection='validation' the most any model may get")
    epoch_selection: Literal["validation", "fixed"] = Field(
        "validation", description="validation: each model trains for the epochs that maximise HitRate@K on a "
        "validation window (the latest validation_share of the training positives, held out), then retrains on all "
        "of them (simulator.run.offline_ihm_select); fixed: every model trains exactly `epochs`")
    validation_share: float = Field(0.1, gt=0, lt=1, description="with epoch_selection='validation': the latest "
                                    "share of the training positives held out to choose each model's epochs")
    batch_size: int = Field(32, ge=1, description="user sequences per step; each gives up to seq_len targets, "
                            "all of them the in-batch negatives")
    lr: float = Field(2e-3, gt=0)
    refresh_hours: float = Field(24.0, gt=0, description="inductive variants re-infer every item embedding from "
                                 "its history this often in the test period (the offline action-to-serving latency)")
    eval_negatives: int = Field(0, ge=0, description="0: rank the target among all items uploaded by then "
                                "(the user's earlier positives excluded); n > 0: among n deterministic uniform samples of them")
    known_users_only: bool = Field(True, description="test-time item histories keep only users with a training "
                                   "positive (the others' id embeddings were never trained: noise)")
    max_eval_per_window: int = Field(20_000, ge=10, description="test positives scored per window (deterministic sample)")
    baselines: bool = Field(True, description="also score the baselines (most popular, recently popular, item-kNN) "
                            "on the same events: rows of the tables beside the variants")
    model: IHMSpec = IHMSpec()


class Scenario(FrozenConfig):
    """A complete, declarative simulation: which platform, which arms, for how long, measured how.

    ``protocol`` says what is run: ``ab`` (the co-diverted online A/B of all arms) or an offline
    protocol on the log (``next_user_offline``: each arm's Next-User variant trained on the same
    stream and scored by Recall@K of the next real interacting user on held-out days; ``ihm_offline``:
    the IHM paper's decay protocol, HitRate/NDCG@10 of each variant in 5 windows after one training).
    """

    name: str
    description: str
    arms: list[ArmSpec]
    control: str
    ladder: list[str] = Field(default_factory=list, description="arms in ladder order: each is also compared with the "
                              "one before it (DualRec's Table 2: every version over the previous one)")
    protocol: Literal["ab", "next_user_offline", "ihm_offline"] = "ab"
    offline: OfflineConfig = OfflineConfig()
    ihm_offline: IHMOfflineConfig = IHMOfflineConfig()
    days: int = Field(14, ge=1)
    ticks_per_day: int = Field(4, ge=1, le=96)
    checkpoint_every: int = Field(3, ge=1, description="days between checkpoints (the last day of an interrupted "
                                  "run is always saved; a resume replays the days after the latest checkpoint)")
    seed: int = 0
    salt: str = "coldsim"
    synthetic: SyntheticConfig = SyntheticConfig()
    scales: dict[str, ScaleConfig] = Field(default_factory=dict)
    world: WorldConfig = WorldConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    metrics: MetricsConfig = MetricsConfig()
    serve: ServeConfig = ServeConfig()

    @model_validator(mode="after")
    def _check(self) -> "Scenario":
        names = [a.name for a in self.arms]
        if len(set(names)) != len(names):
            raise ValueError(f"arm names must be unique, got {names}")
        if self.control not in names:
            raise ValueError(f"control arm '{self.control}' is not one of the arms {names}")
        unknown = [a for a in self.ladder if a not in names]
        if unknown:
            raise ValueError(f"ladder arms {unknown} are not arms of the scenario {names}")
        unknown = [a for a in self.serve.arm_resources if a not in names]
        if unknown:
            raise ValueError(f"serve.arm_resources names {unknown}, which are not arms of the scenario {names}")
        total = sum(a.share for a in self.arms)
        if total > 1.0 + 1e-9:
            raise ValueError(f"arm shares sum to {total:.3f} > 1")
        return self

    def at_scale(self, scale: str | None) -> "Scenario":
        """This scenario with a named scale's overrides applied (``None`` or 'default': unchanged)."""
        if scale in (None, "default"):
            return self
        if scale not in self.scales:
            raise ValueError(f"scenario '{self.name}' has no scale '{scale}'; known: {['default', *self.scales]}")
        s = self.scales[scale]
        upd: dict = {"synthetic": s.synthetic}
        upd["days"] = s.days or s.synthetic.days
        if s.ticks_per_day:
            upd["ticks_per_day"] = s.ticks_per_day
        metrics = {k: v for k, v in (("expo_k", s.expo_k), ("expo_window_days", s.expo_window_days)) if v}
        if metrics:
            upd["metrics"] = self.metrics.model_copy(update=metrics)
        if s.train_batch_size:
            upd["train"] = self.train.model_copy(update={"batch_size": s.train_batch_size})
        return self._revalidated(upd)

    def _revalidated(self, upd: dict) -> "Scenario":
        """A copy with ``upd`` applied and every field validated again (model_copy does not validate)."""
        data = self.model_dump()
        data.update({k: (v.model_dump() if isinstance(v, BaseModel) else v) for k, v in upd.items()})
        return Scenario.model_validate(data)

    def with_overrides(self, days: int | None = None, seed: int | None = None) -> "Scenario":
        upd: dict = {}
        if days is not None:
            if days < 1:
                raise ValueError("--days must be >= 1")
            upd["days"] = days
        if seed is not None:
            upd["seed"] = seed
        return self._revalidated(upd) if upd else self


RuntimeKind = Literal["local", "ray"]
