"""The user-side retrieval channels every arm has: two-tower ANN, fresh items, popular items, following."""

from __future__ import annotations

import math

import numpy as np

from serving.channels.base import Channel, RequestContext, Retrieval


class TwoTowerChannel(Channel):
    """Nearest items to the user-tower vector in the arm's hnswlib item index."""

    name = "two_tower"

    def __init__(self, k: int):
        self.k = k

    def retrieve(self, ctx: RequestContext) -> Retrieval:
        if self.k == 0 or len(ctx.policy.index) == 0:
            return Retrieval.empty(ctx.n)
        labels, _ = ctx.policy.index.query(ctx.user_vecs, self.k)
        return Retrieval(labels)


class FreshChannel(Channel):
    """A per-request sample of items uploaded within ``window_s`` before the request.

    ``k`` may be fractional: each request gets ``floor(k)`` candidates plus one more with probability
    ``k - floor(k)`` (a platform with many slots per upload explores less than one new item per request).

    ``popularity_power = 0`` samples them uniformly; ``p > 0`` with weight ``(1 + c)^p``, ``c`` the interactions
    the item's creator has collected in the arm so far, so established creators' new items are explored first
    and a new creator's items rarely (user-side retrieval "favours a few", DualRec Fig. 8)."""

    name = "fresh"

    def __init__(self, k: float, window_s: float, popularity_power: float = 0.0):
        if not (k >= 0 and math.isfinite(k)):
            raise ValueError(f"fresh channel k must be a finite number >= 0, got {k}")
        self.k = k
        self.whole, self.frac = int(math.floor(k)), k - math.floor(k)
        self.window_s = int(window_s)
        self.popularity_power = popularity_power

    def retrieve(self, ctx: RequestContext) -> Retrieval:
        s = ctx.policy.store
        width = self.whole + (self.frac > 0)
        if width == 0 or s.n_items == 0:
            return Retrieval.empty(ctx.n)
        order = s.rows_by_upload()
        up = s.item_upload_ts[order]
        hi = np.searchsorted(up, ctx.ts, side="right")
        lo = np.searchsorted(up, ctx.ts - self.window_s, side="left")
        span = hi - lo
        u = ctx.random(width)
        if self.popularity_power == 0:
            draw = lo[:, None] + (u * np.maximum(span, 1)[:, None]).astype(np.int64)
        else:  # inverse-CDF sampling within each request's window of the upload-sorted items
            creators = s.item_creator[: s.n_items]
            _, inv = np.unique(creators, return_inverse=True)
            c_inter = np.bincount(inv, weights=s.item_inter[: s.n_items])
            w = (1.0 + c_inter[inv[order]]) ** self.popularity_power
            cum = np.concatenate([[0.0], np.cumsum(w)])
            target = cum[lo][:, None] + u * (cum[hi] - cum[lo])[:, None]
            draw = np.clip(np.searchsorted(cum, target, side="right") - 1, lo[:, None], np.maximum(hi - 1, lo)[:, None])
        rows = order[np.minimum(draw, len(order) - 1)]
        out = np.where(span[:, None] > 0, rows, -1)
        if self.frac > 0:  # the fractional slot: kept with probability frac
            out[ctx.random() >= self.frac, self.whole] = -1
        return Retrieval(out)


class PopularChannel(Channel):
    """The arm's items with the most recent (decayed) interactions; the same list for every request."""

    name = "popular"

    def __init__(self, k: int):
        self.k = k

    def retrieve(self, ctx: RequestContext) -> Retrieval:
        s = ctx.policy.store
        n_items = s.n_items
        if self.k == 0 or n_items == 0:
            return Retrieval.empty(ctx.n)
        k = min(self.k, n_items)
        pop = s.item_recent[:n_items]
        top = np.argpartition(-pop, k - 1)[:k]
        top = top[np.argsort(-pop[top], kind="stable")]
        return Retrieval(np.broadcast_to(top[None, :], (ctx.n, k)))


class FollowingChannel(Channel):
    """The newest items, uploaded within ``window_s`` before the request, of creators the user follows.

    Follows come from the follow labels in the arm's feedback (:meth:`FeatureStore.add_follows`), so a creator
    whose items earned more followers gets each new upload in front of more users early on.
    """

    name = "following"

    def __init__(self, k: int, window_s: float):
        self.k = k
        self.window_s = int(window_s)

    def retrieve(self, ctx: RequestContext) -> Retrieval:
        s = ctx.policy.store
        if self.k == 0 or s.n_items == 0:
            return Retrieval.empty(ctx.n)
        out = np.full((ctx.n, self.k), -1, np.int64)
        if len(s.follows) == 0 or ctx.n == 0:
            return Retrieval(out)
        # recent items of followed creators, grouped by creator row, newest first within a creator
        order = s.rows_by_upload()
        up = s.item_upload_ts[order]
        lo, hi = np.searchsorted(up, ctx.ts.min() - self.window_s, "left"), np.searchsorted(up, ctx.ts.max(), "right")
        recent = order[lo:hi]
        c_rows = s.creators.rows(s.item_creator[recent], strict=False)
        recent, c_rows = recent[c_rows >= 0], c_rows[c_rows >= 0]
        by_creator = np.lexsort((-s.item_upload_ts[recent], c_rows))
        recent, c_rows = recent[by_creator], c_rows[by_creator]
        # (request, followed creator) pairs -> (request, item) pairs
        req, creator = s.followed(ctx.user_rows)
        first, last = np.searchsorted(c_rows, creator, "left"), np.searchsorted(c_rows, creator, "right")
        n = last - first
        req = np.repeat(req, n)
        items = recent[np.repeat(first - np.cumsum(n) + n, n) + np.arange(n.sum())]
        up = s.item_upload_ts[items]
        ok = (up <= ctx.ts[req]) & (up >= ctx.ts[req] - self.window_s)
        req, items, up = req[ok], items[ok], up[ok]
        # the k newest per request
        o = np.lexsort((-up, req))
        req, items = req[o], items[o]
        starts = np.searchsorted(req, req, "left")
        rank = np.arange(len(req)) - starts
        keep = rank < self.k
        out[req[keep], rank[keep]] = items[keep]
        return Retrieval(out)
