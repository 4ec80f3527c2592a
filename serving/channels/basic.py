"""The user-side retrieval channels every arm has: two-tower ANN, fresh items, popular items."""

from __future__ import annotations

import numpy as np

from serving.stack import RequestContext


class TwoTowerChannel:
    """Nearest items to the user-tower vector in the arm's hnswlib item index."""

    name = "two_tower"

    def __init__(self, k: int):
        self.k = k

    def retrieve(self, ctx: RequestContext) -> np.ndarray:
        if self.k == 0 or len(ctx.policy.index) == 0:
            return np.full((ctx.n, 0), -1, np.int64)
        labels, _ = ctx.policy.index.query(ctx.user_vecs, self.k)
        return labels


class FreshChannel:
    """A per-request random sample of items uploaded within ``window_s`` before the request."""

    name = "fresh"

    def __init__(self, k: int, window_s: float):
        self.k = k
        self.window_s = int(window_s)

    def retrieve(self, ctx: RequestContext) -> np.ndarray:
        s = ctx.policy.store
        if self.k == 0 or s.n_items == 0:
            return np.full((ctx.n, 0), -1, np.int64)
        order = s.rows_by_upload()
        up = s.item_upload_ts[order]
        hi = np.searchsorted(up, ctx.ts, side="right")
        lo = np.searchsorted(up, ctx.ts - self.window_s, side="left")
        span = hi - lo
        draw = lo[:, None] + (ctx.rng.random((ctx.n, self.k)) * np.maximum(span, 1)[:, None]).astype(np.int64)
        rows = order[np.minimum(draw, len(order) - 1)]
        return np.where(span[:, None] > 0, rows, -1)


class PopularChannel:
    """The arm's items with the most recent (decayed) interactions; the same list for every request."""

    name = "popular"

    def __init__(self, k: int):
        self.k = k

    def retrieve(self, ctx: RequestContext) -> np.ndarray:
        s = ctx.policy.store
        n_items = s.n_items
        if self.k == 0 or n_items == 0:
            return np.full((ctx.n, 0), -1, np.int64)
        k = min(self.k, n_items)
        pop = s.item_recent[:n_items]
        top = np.argpartition(-pop, k - 1)[:k]
        top = top[np.argsort(-pop[top], kind="stable")]
        return np.broadcast_to(top[None, :], (ctx.n, k))
