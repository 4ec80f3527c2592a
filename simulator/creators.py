"""Creator dynamics: feedback received on recent items drives whether a creator publishes again.

For creator c on day d, with F_c the interactions (like/comment/follow) its items received in
the arm over the last W days and R_c the same quantity in the replayed log,

    m_c = clip( ((1 + F_c) / (1 + R_c)) ** elasticity, 1 / max_mult, max_mult )

Each upload the log has for c on day d is kept with probability min(1, m_c), and
Poisson((m_c - 1)^+ * rate_c) extra uploads are added (rate_c: c's daily upload rate in the
log). ``elasticity = 0`` gives m_c = 1: pure replay.
"""

from __future__ import annotations

import numpy as np

from simulator.config import WorldConfig
from simulator.ids import IdMap


class CreatorDynamics:
    """Per-arm creator state: feedback history and the upload multiplier of each creator."""

    def __init__(
        self,
        creator_ids: np.ndarray,
        reference_feedback: np.ndarray,
        upload_rate: np.ndarray,
        cfg: WorldConfig,
        days: int,
    ):
        """``reference_feedback``: (n_creators, days) interactions received per day in the log."""
        self.creators = IdMap(creator_ids, "creator")
        self.cfg = cfg
        self.reference = np.asarray(reference_feedback, np.float64)
        self.received = np.zeros((len(creator_ids), days), np.float64)
        self.rate = np.asarray(upload_rate, np.float64)

    def observe(self, day: int, creator_ids: np.ndarray, interactions: np.ndarray) -> None:
        """Add interactions received on ``day`` (aligned arrays: creator of each exposure, count)."""
        rows = self.creators.rows(creator_ids)
        np.add.at(self.received[:, day], rows, interactions)

    def multiplier(self, day: int) -> np.ndarray:
        """m_c for every creator (1.0 on day 0 or when elasticity is 0)."""
        e = self.cfg.creator_elasticity
        if day == 0 or e == 0:
            return np.ones(len(self.creators))
        lo = max(0, day - self.cfg.feedback_window_days)
        f = self.received[:, lo:day].sum(1)
        r = self.reference[:, lo:day].sum(1)
        m = ((1.0 + f) / (1.0 + r)) ** e
        mx = self.cfg.max_upload_multiplier
        return np.clip(m, 1.0 / mx, mx)

    def plan(self, day: int, replay_creators: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Decide day ``day``'s uploads: (keep mask over the replayed uploads, extra uploads per creator)."""
        m = self.multiplier(day)
        rows = self.creators.rows(replay_creators)
        keep = rng.random(len(rows)) < np.minimum(1.0, m[rows])
        extra = rng.poisson(np.maximum(m - 1.0, 0.0) * self.rate)
        return keep, extra

    def state(self) -> dict:
        return {"received": self.received.copy()}

    def load_state(self, state: dict) -> None:
        self.received = np.asarray(state["received"], np.float64).copy()
