"""Typed, frozen configuration of a simulation run (pydantic): platform, world, arms, training, metrics.

Bottom of the import graph next to :mod:`simulator.core.schema`. A scenario (``scenarios/``) is one
:class:`Scenario` value; everything below it reads these types, never free-form dicts.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SyntheticConfig(_Frozen):
    """Size and shape of the embedded synthetic platform (the default log source)."""

    n_users: int = Field(20_000, ge=10)
    n_creators: int = Field(2_000, ge=2)
    n_topics: int = Field(16, ge=2)
    latent_dim: int = Field(16, ge=2)
    days: int = Field(14, ge=1)
    catalogue_items_per_creator: float = Field(3.0, ge=0, description="items each creator has before day 0 (mean)")
    uploads_per_creator_day: float = Field(0.1, gt=0, description="mean daily upload rate; per-creator rates are lognormal. "
                                           "With the slots of the visiting users it sets the supply/demand ratio of new "
                                           "items (docs/world.md, 'Scarce early exposure')")
    mean_daily_visit_prob: float = Field(0.3, gt=0, le=1)
    requests_per_visit: float = Field(2.0, gt=0, description="mean requests per visiting user and day")
    slate_size: int = Field(8, ge=1)
    weekend_boost: float = Field(1.25, gt=0, description="visit-rate multiplier on Saturdays and Sundays")
    popularity_skew: float = Field(1.1, ge=0, description="Zipf exponent of creator quality (long tail)")
    pre_days: int = Field(7, ge=0, description="days the logging policy also logs before day 0 (history the world "
                          "reads, never replayed as simulated days)")
    item_specific_share: float = Field(0.35, ge=0, le=1, description="share of an item's latent variance that is its "
                                       "own, not its creator's (docs/world.md)")
    item_quality_sigma: float = Field(0.4, ge=0, description="scale of the item-specific part of log-quality "
                                      "(its standard deviation)")
    item_quality_tail: float = Field(0.5, ge=0, le=2, description="lognormal shape of the item-specific quality "
                                     "(0 = normal; larger = heavier right tail)")
    content_dim: int | None = Field(None, ge=0, description="content features f_content_*; None = latent_dim, "
                                    "0 = none; otherwise at least latent_dim")
    content_r2: float = Field(0.3, ge=0, le=1, description="share of the latent vector's variance a linear predictor "
                              "from the content features explains")
    user_propensity_sigma: float = Field(0.8, ge=0, description="std of the per-user logit bias of like/comment/"
                                         "follow/share (lognormal rate multiplier)")

    @model_validator(mode="after")
    def _content_dim(self) -> "SyntheticConfig":
        if self.content_dim is not None and 0 < self.content_dim < self.latent_dim:
            raise ValueError(f"content_dim must be 0 or at least latent_dim ({self.latent_dim}), got {self.content_dim}: "
                             "fewer content features cannot carry the set content_r2")
        return self

    @property
    def n_content(self) -> int:
        """Number of content features: ``content_dim``, or ``latent_dim`` when it is None."""
        return self.latent_dim if self.content_dim is None else self.content_dim

    @property
    def slots_per_upload(self) -> float:
        """Slate slots the visiting users offer per new upload on a weekday: the supply/demand ratio of new items
        (docs/world.md, "Scarce early exposure"; the DualRec paper's platform has at least ~500)."""
        slots = self.n_users * self.mean_daily_visit_prob * self.requests_per_visit * self.slate_size
        return slots / (self.n_creators * self.uploads_per_creator_day)


TINY_UPLOADS = 1.0
"""``uploads_per_creator_day`` of the scenarios' ``tiny`` scales: smoke-test worlds of a few hundred creators and
3-4 days keep ten times the default supply so that they have enough new items to read (their slots per upload,
~50 a day, are the default world's before its calibration to the DualRec paper's platform; docs/world.md)."""


class WorldConfig(_Frozen):
    """The world's response model and creator dynamics (``simulator/world/creators.py``; docs/world.md, "Creators with
    memory": equations, calibration targets and what the tests check)."""

    creator_elasticity: float = Field(0.5, ge=0, description="m = rho ** elasticity: the upload multiplier's response "
                                      "to relative satisfaction; 0 = pure replay of uploads (no multiplier, no churn)")
    max_upload_multiplier: float = Field(3.0, ge=1, description="cap of the upload multiplier (and 1 / cap its floor)")
    satisfaction_halflife_days: float = Field(7.0, gt=0, description="creators remember feedback with this half-life: "
                                              "uploads reach half their response to a lasting change after it "
                                              "(DualRec Fig. 7: DAC still rising after 21 days)")
    satisfaction_expo_weight: float = Field(0.3, ge=0, description="weight of log1p(exposures a day) in the daily "
                                            "feedback r")
    satisfaction_inter_weight: float = Field(1.0, ge=0, description="weight of log1p(likes + comments + follows a "
                                             "day) in r: creators see interactions more than views (DualRec Fig. 1)")
    satisfaction_prior: float = Field(1.0, gt=0, description="eps in rho = (S + eps) / (B + eps): creators with "
                                      "little baseline feedback react less than without it")
    baseline_days: int = Field(7, ge=1, description="fallback reference when the log has no pre-period (no events "
                                "before t0): the baseline is the creator's feedback in the replayed log's first "
                                "baseline_days days, the logging policy's level then")
    churn_threshold: float = Field(0.5, ge=0, description="an active creator whose relative satisfaction rho is "
                                   "below this may churn (stop uploading)")
    churn_prob: float = Field(0.05, ge=0, le=1, description="daily churn probability below churn_threshold")
    return_prob: float = Field(0.01, ge=0, le=1, description="daily probability that a churned creator returns anyway")
    return_threshold: float = Field(0.8, ge=0, description="a churned creator returns once rho is back at this "
                                    "(feedback on its catalogue recovered); >= churn_threshold")
    oracle_dim: int = Field(16, ge=2)
    oracle_epochs: int = Field(4, ge=1)
    use_observed_outcomes: bool = True

    @model_validator(mode="after")
    def _return_above_churn(self) -> "WorldConfig":
        if self.return_threshold < self.churn_threshold:
            raise ValueError(f"return_threshold ({self.return_threshold}) must be >= churn_threshold "
                             f"({self.churn_threshold}): a creator that returns must not be churning already")
        return self


class StackConfig(_Frozen):
    """A recommender stack: retrieval channels -> multi-task ranking -> boosted final ranking -> slate."""

    two_tower_k: int = Field(100, ge=1, description="candidates from the user-side two-tower channel")
    fresh_k: float = Field(0.05, ge=0, allow_inf_nan=False, description="candidates from the fresh-items channel per "
                           "request (exploration: sized with new_item_boost so that base exposes a minority of new "
                           "items on their first day, docs/world.md); a fraction f adds one more candidate to a share "
                           "f of requests")
    fresh_window_hours: float = Field(24.0, gt=0)
    fresh_popularity_power: float = Field(1.0, ge=0, description="0: the fresh channel samples recent items uniformly; "
                                          "p > 0: with weight (1 + creator's interactions in the arm)^p")
    popular_k: int = Field(20, ge=0, description="candidates from the popular-items channel")
    follow_k: int = Field(10, ge=0, description="candidates from the following channel: the newest items of "
                          "creators the user follows")
    follow_window_hours: float = Field(72.0, gt=0, description="the following channel returns items uploaded "
                                       "within this many hours before the request")
    new_item_boost: float = Field(0.01, ge=0, description="FairRec-like additive boost for items with few exposures")
    boost_max_exposures: int = Field(50, ge=1, description="items with fewer exposures than this get the (decaying) boost")
    rank_weights: dict[str, float] = Field(
        default_factory=lambda: {"like": 1.0, "comment": 1.0, "follow": 2.0, "view": 0.3}
    )
    hnsw_m: int = Field(16, ge=4)
    hnsw_ef_construction: int = Field(100, ge=10)
    hnsw_ef: int = Field(200, ge=10)
    exclude_seen: bool = True

    @field_validator("rank_weights")
    @classmethod
    def _known_tasks(cls, v: dict[str, float]) -> dict[str, float]:
        from simulator.core.schema import RESPONSE_TYPES

        bad = set(v) - set(RESPONSE_TYPES)
        if bad:
            raise ValueError(f"unknown ranking tasks {sorted(bad)}; expected a subset of {list(RESPONSE_TYPES)}")
        return v


class NextUserSpec(_Frozen):
    """Next-User Retrieval (papers/next_user_retrieval.txt section 2): model, loss, ablations and its channel."""

    mode: Literal["full", "lookalike"] = Field("full", description="'lookalike': sum-pooled sequence, no transformer")
    mask_prefix: bool = Field(False, description="ablation: prefix prompts masked")
    seq_len: int = Field(50, ge=1, le=50, description="max positive users per item (the paper's 50; 25 = 'half')")
    use_cls: bool = True
    causal: bool = True
    heads: int = Field(2, ge=1)
    layers: int = Field(2, ge=1)
    l1: float = Field(1.0, ge=0, description="weight of the contrastive loss")
    l2: float = Field(1.0, ge=0, description="weight of the exposure cross-entropy")
    l3: float = Field(0.1, ge=0, description="weight of the auxiliary (stop-gradient MSE) loss")
    tau: float = Field(0.1, gt=0)
    n_random_negatives: int = Field(64, ge=0)
    max_train_samples: int = Field(8192, ge=16, description="cold-item exposures trained on per tick (positives first)")
    k: int = Field(40, ge=1, description="candidates the next-user channel adds per request")
    cold_max_exposures: int = Field(200, ge=1, description="items under this many exposures are in the channel's index")
    cold_max_age_hours: float = Field(72.0, gt=0, description="... and younger than this")


class DualRecSpec(_Frozen):
    """DualRec with UAC (papers/dualrec_creator_side.txt, SPEC section 5): creator-side matching on upload,
    the available-user store, the result cache and the boosted combined ranking. ``for_version`` gives the
    paper's v1..v5 ladder; the switches below are its steps and the UAC ablations."""

    ranker_sa_ef: bool = Field(True, description="ranking with sample augmentation (item id dropped) and extra item features (v2+)")
    item_sim: bool = Field(True, description="item-similarity retrieval: recent likers of content-similar items (v3+)")
    user_sim: bool = Field(True, description="user-similarity retrieval: users similar to the creator's audience (v4+)")
    user_bias: bool = Field(True, description="score integration divides by b_u, the user's interaction rate (eq. 10, v5)")
    use_activity: bool = Field(True, description="UAC ablation switch: False matches users regardless of predicted activity")
    use_store: bool = Field(True, description="UAC ablation switch: False = no available-user store (no cap, no activity)")
    targets: int = Field(200, ge=1, description="T: users matched to each uploaded item")
    cap: int = Field(10, ge=1, description="N: the per-user cap on the matching set M_u")
    ttl_hours: float = Field(24.0, gt=0, description="expiry of a match in the result cache")
    activity_threshold: float = Field(0.5, gt=0, lt=1, description="a_u = 1 when P(visit tomorrow) >= this")
    alpha: float = Field(0.5, ge=0, description="eq. 14 weight of the creator-side score in the final ranking")
    budget: float = Field(0.02, ge=0, le=1, description="at most this share of slate slots goes to matched items")
    two_tower_k: int = Field(400, ge=1, description="candidate users from the creator-side two-tower (user ANN index)")
    item_sim_items: int = Field(10, ge=1, description="content-similar items whose recent likers are candidates")
    user_sim_seeds: int = Field(20, ge=1, description="seed users (the creator's recent audience) for user similarity")
    user_sim_k: int = Field(10, ge=1, description="similar users per seed user")
    recent_users: int = Field(10, ge=1, le=50, description="extra feature: the item's last interacted users")
    rank_weights: dict[str, float] = Field(
        default_factory=lambda: {"like": 1.0, "comment": 1.5, "follow": 2.0, "share": 0.5, "view": 0.1},
        description="eq. 10 w_k: interactions the creator sees count more than watch signals")
    negatives: int = Field(64, ge=1, description="random negative users per positive for the creator-side two-tower")
    auc_table: bool = Field(False, description="also train the three other SA/EF ranker variants on the same stream "
                            "and report their progressive AUC (paper Table 4)")
    max_train_samples: int = Field(16_384, ge=16, description="exposures per tick the creator-side models train on")
    train_batch_size: int = Field(256, ge=8, description="minibatch of the creator-side models: a tick of a few thousand "
                                  "exposures must still give them tens of optimiser steps")

    @field_validator("rank_weights")
    @classmethod
    def _known_tasks(cls, v: dict[str, float]) -> dict[str, float]:
        return StackConfig._known_tasks(v)

    @classmethod
    def for_version(cls, version: int, **overrides) -> "DualRecSpec":
        """The paper's ladder: v1 two-tower + ranking without SA/EF + UAC + combined; v2 + SA/EF;
        v3 + item-similarity retrieval; v4 + user-similarity retrieval; v5 + user-bias score integration."""
        if version not in (1, 2, 3, 4, 5):
            raise ValueError(f"DualRec versions are 1..5, got {version}")
        steps = dict(ranker_sa_ef=version >= 2, item_sim=version >= 3, user_sim=version >= 4, user_bias=version >= 5)
        return cls(**(steps | overrides))


class IHMSpec(_Frozen):
    """The Item History Model two-tower (papers/item_history_model_ihm.txt section 3) and its SASRec user tower."""

    heads: int = Field(1, ge=1, description="H experts of eq. (1)-(3) (the paper's grid search found 1 best)")
    max_history: int = Field(50, ge=1, description="most recent interacting users an item embedding reads")
    seq_len: int = Field(50, ge=1, description="most recent items the sequential user tower reads")
    layers: int = Field(2, ge=1, description="SASRec blocks (the paper follows SASRec: 2 blocks, 1 head)")
    attn_heads: int = Field(1, ge=1, description="attention heads of the SASRec blocks")
    dropout: float = Field(0.2, ge=0, lt=1, description="SASRec dropout (0.2 on MovieLens in the paper)")
    tau: float = Field(0.1, gt=0, description="softmax temperature on cosine scores")
    history_dropout: float = Field(0.5, ge=0, lt=1, description="training only: each history user is masked "
                                   "with this probability (without it the user-id embeddings memorise training co-likes)")


class IHMArmSpec(_Frozen):
    """IHM as an arm of the A/B platform (papers/item_history_model_ihm.txt section 4; docs/models/ihm.md):
    the retrieval channel over cold items' IHM embeddings, real-time re-inference and the training schedule.
    ``realtime=False`` is the "no real-time serving" ablation (daily batch inference), ``static_only=True``
    the "no inductive structure" one (e_i = E_S)."""

    realtime: bool = Field(True, description="re-infer an item's embedding on a like/comment or every "
                           "impressions_trigger impressions (False: every cold item once a day, at the day's end)")
    static_only: bool = Field(False, description="ablation: e_i = E_S(x_i), histories are ignored (trained so too)")
    rate_limit_s: float = Field(300.0, ge=0, description="minimum simulated seconds between two inferences of an "
                                "item; triggers inside the gap are queued until it expires")
    impressions_trigger: int = Field(50, ge=0, description="X: also re-infer every X impressions (0: off)")
    train_days: int = Field(2, ge=1, description="the IHM weights train on the arm's first train_days days, then freeze")
    periodic_retrain: bool = Field(False, description="keep training and loading new weights after train_days "
                                   "(the paper's section 4 extension)")
    k: int = Field(40, ge=1, description="candidates the ihm channel adds per request")
    cold_max_exposures: int = Field(200, ge=1, description="items under this many exposures are in the channel's index")
    cold_max_age_hours: float = Field(72.0, gt=0, description="... and younger than this")
    replay_size: int = Field(8192, ge=0, description="the latest logged positives kept for training (0: the tick's only)")
    max_train_samples: int = Field(4096, ge=16, description="positives drawn from the replay buffer per tick")
    train_epochs: int = Field(4, ge=1, description="passes over them per tick")
    train_batch_size: int = Field(128, ge=8, description="positives per optimiser step (in-batch negatives)")
    lr: float = Field(1e-3, gt=0)
    model: IHMSpec = Field(IHMSpec(seq_len=20), description="towers; the user tower reads the user's last seq_len "
                           "positives (20 online: they are feature-logged with every exposure)")


class ArmSpec(_Frozen):
    """One arm of a scenario: a name, a registered kind, its traffic share, its stack and its strategy's settings."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    kind: str = "base"
    share: float = Field(gt=0, le=1)
    stack: StackConfig = StackConfig()
    next_user: NextUserSpec | None = None
    dualrec: DualRecSpec | None = None
    ihm: IHMArmSpec | None = None
    injected_upload_factor: float = Field(1.0, gt=0, description="calibration only, not a strategy: the world makes "
                                          "this arm's creators upload this many times as often (extra uploads, or "
                                          "replayed ones dropped), a known effect the read-out must detect")


class ModelConfig(_Frozen):
    """Sizes of the arms' two-tower and ranking models."""

    dim: int = Field(32, ge=4)
    id_buckets: int = Field(1 << 15, ge=16, description="hashed id-embedding buckets (new ids need no resize)")
    hidden: int = Field(64, ge=4)


class TrainConfig(_Frozen):
    """The online learning loop (one long-lived Ray TorchTrainer per run)."""

    batch_size: int = Field(256, ge=8, description="minibatch of the online updates: a tick of a few thousand exposures "
                            "per arm must still give tens of optimiser steps (at 2,048 the user-side ranker stayed at "
                            "chance for most of a run, docs/performance.md)")
    lr: float = Field(3e-3, gt=0)
    epochs_per_tick: int = Field(1, ge=1)
    publish_delay_ticks: int = Field(1, ge=0, description="ticks between the end of a training tick and serving its weights")
    num_workers: int = Field(1, ge=1, le=1, description="Ray Train workers: one worker holds every arm's learner "
                             "(data-parallel training across workers is not implemented)")
    temperature: float = Field(0.1, gt=0)
    base_models: Literal["shared", "control", "per_arm"] = Field(
        "shared", description="the user-side base models (two-tower, multi-task ranker). 'shared': one learner "
        "trained on the pooled traffic of all arms serves the same weights to every arm, and arms differ only by "
        "their strategy (an industrial co-diverted test); 'control': the same, trained on the control arm's "
        "traffic only (no treatment traffic reaches the base models); 'per_arm': every arm trains its own on its "
        "own traffic from its own initialisation (arms then also differ in model quality by chance; "
        "docs/metrics.md, 'Base models')")


class MetricsConfig(_Frozen):
    """Thresholds of the metrics (docs/metrics.md) and the bootstrap behind the confidence intervals.

    ExpoReach thresholds are either fixed (``expo_k``, metrics ``expo_reach_<K>``) or derived from all
    arms' items after the run (``expo_k=None``: one per ``expo_quantiles``, metrics ``expo_reach_q<pct>``);
    :func:`simulator.metrics.resolve_expo_k` fixes derived ones into ``expo_thresholds``.
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


class ServeConfig(_Frozen):
    """Where the HTTP ingress listens when enabled (loopback by default)."""

    host: str = "127.0.0.1"
    port: int = Field(8765, ge=0, le=65535)
    http: bool = False


class ScaleConfig(_Frozen):
    """Overrides a named scale applies to a scenario (``--scale tiny``)."""

    synthetic: SyntheticConfig
    days: int | None = None
    ticks_per_day: int | None = Field(None, ge=1, le=96)
    expo_k: list[int] | None = None
    expo_window_days: float | None = Field(None, gt=0, description="ExpoReach's age window at this scale (a run of a "
                                           "few days needs a window shorter than the default's)")
    train_batch_size: int | None = Field(None, ge=8)


class OfflineConfig(_Frozen):
    """An offline protocol on the log (no A/B traffic): time split, training passes, evaluation."""

    train_frac: float = Field(0.7, gt=0, lt=1, description="days before this fraction of the log train, later days test")
    epochs: int = Field(1, ge=1, description="passes over the training days (in time order each pass)")
    samples_per_step: int = Field(4096, ge=16, description="training samples per step of the stream")
    batch_size: int = Field(256, ge=8, description="minibatch size of the offline training steps")
    negatives_per_positive: float = Field(1.0, ge=0, description="exposed-not-interacted samples kept per positive "
                                          "(a deterministic subsample; the CE term's negatives)")
    max_eval: int = Field(4000, ge=10, description="held-out next-user events evaluated (deterministic sample)")
    recall_k: list[int] = Field(default_factory=lambda: [20, 50])


class IHMOfflineConfig(_Frozen):
    """The IHM paper's offline decay protocol (section 5.1): train once before the median timestamp, then
    score every later positive in 5 equal time windows with no retraining. The variants are the arms,
    by ``kind``: ihm, ihm_frozen, ihm_static, transductive, sasrec (``simulator.run.offline_ihm.VARIANTS``)."""

    windows: int = Field(5, ge=1, description="equal-duration windows the later half is cut into")
    tail_max: int = Field(5, ge=1, description="tail items have fewer than this many training interactions (X)")
    k: int = Field(10, ge=1, description="cut-off of HitRate@K and NDCG@K")
    epochs: int = Field(20, ge=1, description="passes over the training positives (shuffled user sequences)")
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
    model: IHMSpec = IHMSpec()


class Scenario(_Frozen):
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
