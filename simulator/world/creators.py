"""Creator dynamics: creators with memory. Feedback drives satisfaction; satisfaction drives uploads and churn.

Per creator c and simulated day d (docs/world.md, "Creators with memory"), with x_cd the exposures and
y_cd the interactions (like + comment + follow) c's items received in the arm on day d:

    r_cd   = w_expo * log1p(x_cd) + w_inter * log1p(y_cd)              daily feedback, saturated
    S_c    <- lam * S_c + (1 - lam) * r_cd,  lam = 2 ** (-1 / halflife)  satisfaction: remembered with a half-life
    B_c    = the same EWMA of r over the reference days (the log's pre-period, else its first days), bias-corrected
    rho_c  = (S_c + eps) / (B_c + eps)                                   relative satisfaction; S_c starts at B_c
    m_c    = clip(rho_c ** elasticity, 1 / max_mult, max_mult)           upload multiplier

Uploads on day d use S folded through day d - 1 (the day's own feedback comes after its uploads). An active
creator keeps each upload the log has for it on day d with probability min(1, m_c) and adds
Poisson((m_c - 1)^+ * rate_c) uploads (rate_c: its daily upload rate in the replayed log); a churned creator
uploads nothing. Churn: an active creator with rho_c < churn_threshold churns with probability churn_prob
a day; a churned one returns with probability return_prob a day, and surely once rho_c >= return_threshold
(its catalogue's feedback recovered). Followers (distinct users who followed one of c's items in the arm) are
counted for diagnostics; they act on uploads through the serving side's "following" channel, whose extra
exposure enters r. ``elasticity = 0`` switches all of it off: pure replay.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np

from simulator.core.config import WorldConfig
from simulator.core.ids import IdMap

USER_ID_LIMIT = 1 << 32  # follower keys pack (creator row, user id) into one int64


@dataclass(frozen=True)
class CreatorReference:
    """What creator dynamics measure each creator against, from the log (:func:`simulator.world.platform.creator_reference`).

    ``exposures`` and ``interactions`` are (C, D) counts per reference day (oldest first) the creator's items
    received in the log; ``pre_period`` says whether those D days are the log's pre-period (the days before the
    simulation's t0) or, for a log without one, the run's first days (the logging policy's level then).
    """

    creator_ids: np.ndarray  # (C,)
    exposures: np.ndarray  # (C, D)
    interactions: np.ndarray  # (C, D)
    upload_rate: np.ndarray  # (C,) uploads per day in the replayed log
    pre_period: bool

    def select(self, mask: np.ndarray) -> "CreatorReference":
        """The reference of a subset of creators (e.g. one arm's bucket)."""
        return replace(self, creator_ids=self.creator_ids[mask], exposures=self.exposures[mask],
                       interactions=self.interactions[mask], upload_rate=self.upload_rate[mask])


@dataclass
class CreatorState:
    """Everything creator dynamics change during a run (a checkpoint)."""

    satisfaction: np.ndarray  # (C,) S_c folded through day ``folded_days - 1``
    folded_days: int  # days 0..folded_days-1 are in ``satisfaction``
    exposures: np.ndarray  # (C, days) received in the arm
    interactions: np.ndarray  # (C, days)
    active: np.ndarray  # (C,) bool: not churned
    transitions_through: int  # churn/return drawn for days < this
    churn_day: np.ndarray  # (C,) day of the last churn, -1 if never
    return_day: np.ndarray  # (C,) day of the last return, -1 if never
    follower_keys: np.ndarray  # sorted int64 creator_row << 32 | user_id

    def copy(self) -> "CreatorState":
        return CreatorState(**{f.name: (getattr(self, f.name).copy() if isinstance(getattr(self, f.name), np.ndarray)
                                        else getattr(self, f.name)) for f in fields(self)})


def daily_feedback(exposures: np.ndarray, interactions: np.ndarray, cfg: WorldConfig) -> np.ndarray:
    """r: a day's feedback of each creator, each signal saturated by log1p and weighted."""
    return (cfg.satisfaction_expo_weight * np.log1p(np.asarray(exposures, np.float64))
            + cfg.satisfaction_inter_weight * np.log1p(np.asarray(interactions, np.float64)))


def decay(cfg: WorldConfig) -> float:
    """lam: the share of yesterday's satisfaction kept today (half of it gone after ``satisfaction_halflife_days``)."""
    return float(2.0 ** (-1.0 / cfg.satisfaction_halflife_days))


def baseline(reference: CreatorReference, cfg: WorldConfig) -> np.ndarray:
    """B: each creator's satisfaction at the end of its reference days, the bias-corrected EWMA of r over them
    (a weighted mean, weight lam ** age in days); 0 without reference days."""
    r = daily_feedback(reference.exposures, reference.interactions, cfg)  # (C, D)
    n = r.shape[1]
    if n == 0:
        return np.zeros(len(reference.creator_ids))
    w = decay(cfg) ** np.arange(n - 1, -1, -1, dtype=np.float64)
    return r @ (w / w.sum())


class CreatorDynamics:
    """Per-arm creator state: satisfaction, churn and followers of each creator, and the day's upload plan."""

    def __init__(self, reference: CreatorReference, cfg: WorldConfig, days: int):
        self.creators = IdMap(reference.creator_ids, "creator")
        self.cfg = cfg
        self.rate = np.asarray(reference.upload_rate, np.float64)
        self.baseline = baseline(reference, cfg)
        n = len(self.creators)
        self.st = CreatorState(
            satisfaction=self.baseline.copy(), folded_days=0, exposures=np.zeros((n, days)),
            interactions=np.zeros((n, days)), active=np.ones(n, bool), transitions_through=0,
            churn_day=np.full(n, -1, np.int64), return_day=np.full(n, -1, np.int64),
            follower_keys=np.empty(0, np.int64))

    @property
    def enabled(self) -> bool:
        return self.cfg.creator_elasticity > 0

    # ------------------------------------------------------------------ feedback
    def observe(self, day: int, creator_ids: np.ndarray, exposures: np.ndarray, interactions: np.ndarray) -> None:
        """Add feedback received on ``day``: aligned arrays (creator, exposures, interactions); creators may repeat."""
        if day < self.st.folded_days:
            raise ValueError(f"day {day} is already in the creators' satisfaction (folded through day "
                             f"{self.st.folded_days - 1}): feedback must arrive before the next day's plan")
        rows = self.creators.rows(creator_ids)
        np.add.at(self.st.exposures[:, day], rows, np.asarray(exposures, np.float64))
        np.add.at(self.st.interactions[:, day], rows, np.asarray(interactions, np.float64))

    def add_followers(self, creator_ids: np.ndarray, user_ids: np.ndarray) -> None:
        """Users who followed an item of each creator (aligned arrays); a user counts once per creator."""
        user_ids = np.asarray(user_ids, np.int64)
        if len(user_ids) and (user_ids.min() < 0 or user_ids.max() >= USER_ID_LIMIT):
            raise ValueError(f"follower user ids must be in [0, 2**32), got {user_ids.min()}..{user_ids.max()}")
        keys = (self.creators.rows(creator_ids) << 32) | user_ids
        self.st.follower_keys = np.union1d(self.st.follower_keys, keys)

    @property
    def followers(self) -> np.ndarray:
        """(C,) distinct followers each creator gained in the arm."""
        return np.bincount(self.st.follower_keys >> 32, minlength=len(self.creators))

    # ------------------------------------------------------------------ satisfaction
    def _fold(self, day: int) -> None:
        """Fold the feedback of days before ``day`` into satisfaction (idempotent)."""
        lam = decay(self.cfg)
        for d in range(self.st.folded_days, min(day, self.st.exposures.shape[1])):
            r = daily_feedback(self.st.exposures[:, d], self.st.interactions[:, d], self.cfg)
            self.st.satisfaction = lam * self.st.satisfaction + (1.0 - lam) * r
            self.st.folded_days = d + 1

    def relative_satisfaction(self, day: int) -> np.ndarray:
        """rho_c as seen by day ``day``'s uploads (feedback through day - 1); 1 at the start."""
        self._fold(day)
        eps = self.cfg.satisfaction_prior
        return (self.st.satisfaction + eps) / (self.baseline + eps)

    def multiplier(self, day: int) -> np.ndarray:
        """m_c for every creator, churned or not (1.0 when elasticity is 0)."""
        e = self.cfg.creator_elasticity
        if e == 0:
            return np.ones(len(self.creators))
        mx = self.cfg.max_upload_multiplier
        return np.clip(self.relative_satisfaction(day) ** e, 1.0 / mx, mx)

    def expected_uploads(self, day: int) -> np.ndarray:
        """(C,) expected uploads of each creator on ``day`` given who is active now: rate_c * m_c, 0 if churned."""
        return self.rate * self.multiplier(day) * self.st.active

    @property
    def active(self) -> np.ndarray:
        return self.st.active.copy()

    # ------------------------------------------------------------------ churn and the plan
    def _transitions(self, day: int, rng: np.random.Generator) -> None:
        """Churn and return, drawn once per day (a second plan of the same day draws nothing)."""
        if day < self.st.transitions_through:
            return
        self.st.transitions_through = day + 1
        if day == 0:  # nothing to react to yet
            return
        c = self.cfg
        rho = self.relative_satisfaction(day)
        u = rng.random(len(rho))
        was = self.st.active
        churn = was & (rho < c.churn_threshold) & (u < c.churn_prob)
        back = ~was & ((rho >= c.return_threshold) | (u < c.return_prob))
        self.st.active = (was & ~churn) | back
        self.st.churn_day[churn] = day
        self.st.return_day[back] = day

    def plan(self, day: int, replay_creators: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Decide day ``day``'s uploads: (keep mask over the replayed uploads, extra uploads per creator)."""
        rows = self.creators.rows(replay_creators)
        if not self.enabled:
            self.st.transitions_through = max(self.st.transitions_through, day + 1)
            return np.ones(len(rows), bool), np.zeros(len(self.creators), np.int64)
        self._transitions(day, rng)
        m = self.multiplier(day)
        act = self.st.active
        keep = (rng.random(len(rows)) < np.minimum(1.0, m[rows])) & act[rows]
        extra = rng.poisson(np.maximum(m - 1.0, 0.0) * self.rate * act)
        return keep, extra

    # ------------------------------------------------------------------ diagnostics and checkpoints
    def diagnostics(self, day: int) -> dict[str, float]:
        """Per-day figures for the arm's diagnostics row (``creators.*``)."""
        rho = self.relative_satisfaction(day)
        n = max(len(self.creators), 1)
        return {
            "creators.active_share": float(self.st.active.sum() / n),
            "creators.churned_today": float((self.st.churn_day == day).sum()),
            "creators.returned_today": float((self.st.return_day == day).sum()),
            "creators.relative_satisfaction_median": float(np.median(rho)) if len(rho) else float("nan"),
            "creators.followers_mean": float(len(self.st.follower_keys) / n),
        }

    def state(self) -> CreatorState:
        return self.st.copy()

    def load_state(self, state: CreatorState) -> None:
        if not isinstance(state, CreatorState):
            raise TypeError(f"creator dynamics checkpoint of an older format ({type(state).__name__}); "
                            "rerun the scenario instead of resuming it")
        self.st = state.copy()
