"""UAC (DualRec's user availability calculation): activity prediction, the available-user store and the result cache.

SPEC section 5 / papers/dualrec_creator_side.txt:
- activity prediction: a gradient-boosted model (lightgbm) on each user's last 30 days of visits,
  the day of week and cumulative interactions predicts P(visit tomorrow); a_u = 1 above a threshold;
- available set (eq. 12): A = {u : a_u = 1 and |M_u| < N}, M_u = the items matched to u;
- after matching (eq. 13): M_u <- M_u + {i}; users reaching N leave A;
- M_u lives in a result cache whose entries expire (one day by default).

Everything is held as arrays over dense user rows; matching is vectorised over the users of an item.
The DualRec channel (:mod:`serving.channels.dualrec.channel`) is the caller; this module has no Ray import.
"""

from __future__ import annotations

import numpy as np

HISTORY_DAYS = 30


def activity_features(visits: np.ndarray, interactions: np.ndarray, day: int, weekday_of_day0: int = 0) -> np.ndarray:
    """Features to predict a visit on ``day + 1`` from what is known at the end of ``day``.

    visits: (U, D) 0/1 visits per day; interactions: (U, D) interactions per day. Returns (U, 32):
    the last 30 days of visits (most recent first, zero before day 0), the weekday of ``day + 1``
    and the cumulative interactions up to ``day``.
    """
    U = visits.shape[0]
    hist = np.zeros((U, HISTORY_DAYS), np.float32)
    for k in range(HISTORY_DAYS):
        d = day - k
        if d >= 0:
            hist[:, k] = visits[:, d]
    weekday = np.full((U, 1), (weekday_of_day0 + day + 1) % 7, np.float32)
    cum = interactions[:, : day + 1].sum(1, keepdims=True).astype(np.float32)
    return np.concatenate([hist, weekday, cum], 1)


class ActivityPredictor:
    """P(visit tomorrow) per user: lightgbm trained on every (user, day) of the observed history."""

    def __init__(self, threshold: float = 0.5, seed: int = 0, n_estimators: int = 60):
        self.threshold = threshold
        self.seed = seed
        self.n_estimators = n_estimators
        self.model = None

    def fit(self, visits: np.ndarray, interactions: np.ndarray, last_day: int, weekday_of_day0: int = 0) -> "ActivityPredictor":
        """Train on targets days 1..last_day (features from the day before each)."""
        import lightgbm as lgb

        if last_day < 1:
            raise ValueError("ActivityPredictor.fit needs at least two observed days")
        X = np.concatenate([activity_features(visits, interactions, d - 1, weekday_of_day0) for d in range(1, last_day + 1)])
        y = np.concatenate([visits[:, d] for d in range(1, last_day + 1)]).astype(np.int32)
        if y.size == 0 or y.min() == y.max():
            self.model = float(y[0]) if y.size else 0.0  # a constant (or empty) history: predict it
            return self
        self.model = lgb.LGBMClassifier(n_estimators=self.n_estimators, num_leaves=15, learning_rate=0.1,
                                        random_state=self.seed, n_jobs=1, deterministic=True, force_row_wise=True,
                                        verbose=-1)
        self.model.fit(X, y)
        return self

    def predict_proba(self, visits: np.ndarray, interactions: np.ndarray, day: int, weekday_of_day0: int = 0) -> np.ndarray:
        """(U,) P(visit on day + 1)."""
        if self.model is None:
            raise RuntimeError("ActivityPredictor: fit() first")
        if isinstance(self.model, float):
            return np.full(visits.shape[0], self.model)
        return self.model.predict_proba(activity_features(visits, interactions, day, weekday_of_day0))[:, 1]

    def active(self, visits: np.ndarray, interactions: np.ndarray, day: int, weekday_of_day0: int = 0) -> np.ndarray:
        """a_u: (U,) bool, P(visit tomorrow) above the threshold."""
        return self.predict_proba(visits, interactions, day, weekday_of_day0) >= self.threshold


class MatchingCache:
    """The result cache: M_u as at most ``cap`` (item, score, expiry) slots per user row; entries expire at ``ttl_s``."""

    def __init__(self, n_users: int, cap: int, ttl_s: int = 86_400):
        if cap < 1:
            raise ValueError("the per-user cap N must be >= 1")
        self.cap, self.ttl_s = cap, ttl_s
        self.items = np.full((n_users, cap), -1, np.int64)
        self.score = np.zeros((n_users, cap), np.float32)  # the creator-side score s_item(u, i) of the match
        self.expiry = np.zeros((n_users, cap), np.int64)
        self.source = np.full((n_users, cap), -1, np.int8)  # which retrieval found the match (RETRIEVALS), -1 none

    def grow(self, n_users: int) -> None:
        if n_users > len(self.items):
            extra = n_users - len(self.items)
            self.items = np.concatenate([self.items, np.full((extra, self.cap), -1, np.int64)])
            self.score = np.concatenate([self.score, np.zeros((extra, self.cap), np.float32)])
            self.expiry = np.concatenate([self.expiry, np.zeros((extra, self.cap), np.int64)])
            self.source = np.concatenate([self.source, np.full((extra, self.cap), -1, np.int8)])

    def live(self, now: int) -> np.ndarray:
        """(U, cap) bool: slots holding an unexpired item."""
        return (self.items >= 0) & (self.expiry > now)

    def size(self, now: int) -> np.ndarray:
        """|M_u| at ``now`` for every user row."""
        return self.live(now).sum(1)

    def add(self, user_rows: np.ndarray, item: int, now: int, scores: np.ndarray | None = None,
            sources: np.ndarray | None = None) -> np.ndarray:
        """M_u <- M_u + {item} (eq. 13) for users with a free slot; returns the rows that got it.
        ``scores`` (aligned with ``user_rows``) are kept with the match for the combined ranking (eq. 14), ``sources``
        (the retrieval that found each user) for the exposure ratios of the paper's Table 3."""
        user_rows = np.asarray(user_rows, np.int64)
        user_rows, first = np.unique(user_rows, return_index=True)
        sc = np.zeros(len(user_rows), np.float32) if scores is None else np.asarray(scores, np.float32)[first]
        src = np.full(len(user_rows), -1, np.int8) if sources is None else np.asarray(sources, np.int8)[first]
        self.grow(int(user_rows.max()) + 1 if len(user_rows) else 0)
        free = ~((self.items[user_rows] >= 0) & (self.expiry[user_rows] > now))  # (m, cap)
        ok = free.any(1)
        rows = user_rows[ok]
        slot = free[ok].argmax(1)
        self.items[rows, slot] = item
        self.score[rows, slot] = sc[ok]
        self.source[rows, slot] = src[ok]
        self.expiry[rows, slot] = now + self.ttl_s
        return rows

    def items_of(self, user_rows: np.ndarray, now) -> np.ndarray:
        """(n, cap) the unexpired matched items of each user at ``now`` (a scalar or one time per row), -1 elsewhere."""
        return self.entries(user_rows, now)[0]

    def entries(self, user_rows: np.ndarray, now) -> tuple[np.ndarray, np.ndarray]:
        """((n, cap) items, -1 where empty or expired; (n, cap) their scores)."""
        user_rows = np.asarray(user_rows, np.int64)
        now = np.asarray(now, np.int64)
        now = now[:, None] if now.ndim == 1 else now
        items, expiry = self.items[user_rows], self.expiry[user_rows]
        live = (items >= 0) & (expiry > now)
        return np.where(live, items, -1), np.where(live, self.score[user_rows], 0.0).astype(np.float32)

    def remove(self, user_rows: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Drop (user, item) pairs once served, so a matched item is shown once; returns the removed entries'
        sources."""
        user_rows, items = np.asarray(user_rows, np.int64), np.asarray(items, np.int64)
        hit = self.items[user_rows] == items[:, None]
        r, c = np.nonzero(hit)
        self.items[user_rows[r], c] = -1
        return self.source[user_rows[r], c]


class AvailableUserStore:
    """A = {u : a_u = 1 and |M_u| < N} (eq. 12) over a :class:`MatchingCache`; ``match`` applies eq. 13."""

    def __init__(self, cache: MatchingCache):
        self.cache = cache
        self.active = np.zeros(len(cache.items), bool)  # a_u, refreshed daily by the activity model

    def set_active(self, active: np.ndarray) -> None:
        self.cache.grow(len(active))
        self.active = np.asarray(active, bool)

    def available(self, now: int, use_activity: bool = True) -> np.ndarray:
        """(U,) bool membership of A; ``use_activity=False`` ablates the activity prediction."""
        under_cap = self.cache.size(now)[: len(self.active)] < self.cache.cap
        return under_cap & (self.active if use_activity else True)

    def match(self, item: int, candidate_rows: np.ndarray, now: int, top: int, use_activity: bool = True,
              scores: np.ndarray | None = None, sources: np.ndarray | None = None) -> np.ndarray:
        """Keep the first ``top`` candidates (in the given, ranked order) that are in A; add the item to their M_u.
        ``scores`` and ``sources``, aligned with ``candidate_rows``, are stored with the matches."""
        cand = np.asarray(candidate_rows, np.int64)
        sc = np.zeros(len(cand), np.float32) if scores is None else np.asarray(scores, np.float32)
        src = np.full(len(cand), -1, np.int8) if sources is None else np.asarray(sources, np.int8)
        avail = self.available(now, use_activity)
        keep = (cand >= 0) & (cand < len(avail))
        cand, sc, src = cand[keep], sc[keep], src[keep]
        ok = avail[cand]
        return self.cache.add(cand[ok][:top], item, now, sc[ok][:top], src[ok][:top])
