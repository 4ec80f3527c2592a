"""Configuration of the world a run simulates: the synthetic platform's size and shape, the response model and the
creators' dynamics."""

from __future__ import annotations

from pydantic import Field, model_validator

from simulator.core.frozen import FrozenConfig


class SyntheticConfig(FrozenConfig):
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


class WorldConfig(FrozenConfig):
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
