"""Configuration of one arm: its recommender stack and the settings of its cold-start strategy (Next-User, DualRec,
IHM)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from simulator.core.frozen import FrozenConfig


class StackConfig(FrozenConfig):
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


class NextUserSpec(FrozenConfig):
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


class DualRecSpec(FrozenConfig):
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


class IHMSpec(FrozenConfig):
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


class IHMArmSpec(FrozenConfig):
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
    early_stop_ticks: int = Field(0, ge=0, description="early stopping (off by default: at small scale it stopped "
                                  "training after ~1.25 days and lowered the arms' lifts, docs/models/ihm.md): a "
                                  "holdout_share of each tick's new positives "
                                  "is held out; after each tick the current weights and the best so far are scored on "
                                  "them; after this many ticks without the current weights winning, the best are put "
                                  "back and training stops (also put back at the end of train_days); 0: off")
    holdout_share: float = Field(0.1, gt=0, lt=1, description="share of each tick's new positives held out (not trained on)")
    holdout_size: int = Field(1024, ge=2, description="held-out positives kept (the latest)")
    lr: float = Field(1e-3, gt=0)
    model: IHMSpec = Field(IHMSpec(seq_len=20), description="towers; the user tower reads the user's last seq_len "
                           "positives (20 online: they are feature-logged with every exposure)")


class ArmSpec(FrozenConfig):
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
