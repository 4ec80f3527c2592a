"""DualRec's daily diagnostics: hit rates of the creator-side matches (with the activity model, without it, without
the store), |M_u| histograms, new-item coverage of creator-side and user-side retrieval, the budget's use."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from simulator.core.schema import SECONDS_PER_DAY
from serving.channels.dualrec.creator_side import RETRIEVALS
from serving.features import grow_rows

MSIZE_BINS = (0, 1, 2, 3, 6, 11, 21, 51)  # |M_u| histogram bins: 0, 1, 2, 3-5, 6-10, 11-20, 21-50, 51+
MATCH_KINDS = ("actual", "no_activity", "no_store")
"""The store's matches, and two shadows computed from the same ranked lists: what it would have matched without
a_u, and without itself (the top ranked users)."""


def _visited_within(req_keys: np.ndarray, user_rows: np.ndarray, t_from: np.ndarray, ttl: int) -> np.ndarray:
    """Did each (user row, t) have a request in (t, t + ttl]? ``req_keys`` sorted user_row << 40 | ts."""
    if len(req_keys) == 0:
        return np.zeros(len(user_rows), bool)
    lo = (user_rows.astype(np.int64) << 40) | (t_from + 1)
    pos = np.searchsorted(req_keys, lo, side="left")
    nxt = req_keys[np.minimum(pos, len(req_keys) - 1)]
    return (pos < len(req_keys)) & (nxt <= ((user_rows.astype(np.int64) << 40) | (t_from + ttl)))



@dataclass
class MatchingDiagnostics:
    """What DualRec records during a day to report at its end; its fields are its whole state."""

    ttl: int  # how long a match stays in M_u: a match is a hit if its user visits within it
    request_keys: list[np.ndarray] = field(default_factory=list)  # user_row << 40 | ts of requests, for hit rates
    # matches to evaluate by kind, (3, m) blocks: user row, match time, item row
    matches: dict[str, list[np.ndarray]] = field(default_factory=lambda: {kind: [] for kind in MATCH_KINDS})
    day_new: list[np.ndarray] = field(default_factory=list)  # item rows uploaded today
    # item rows reached today by (any user-side channel, the two-tower)
    user_retrieved: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), bool))
    day_expo: np.ndarray = field(default_factory=lambda: np.zeros(2, np.int64))  # (all, of matched items) today
    # today's exposures of matched items by the retrieval that found their user (creator_side.RETRIEVALS)
    day_by_source: np.ndarray = field(default_factory=lambda: np.zeros(len(RETRIEVALS), np.int64))

    def grow(self, n_items: int) -> None:
        self.user_retrieved = grow_rows(self.user_retrieved, n_items)

    def record_requests(self, user_rows: np.ndarray, ts: np.ndarray) -> None:
        self.request_keys.append((user_rows.astype(np.int64) << 40) | ts)

    def record_served(self, slots: int, matched: int, sources: np.ndarray | None = None) -> None:
        """A batch's slate slots filled, how many of them with matched items (the budget's use), and the retrieval
        that found each matched item's user (the paper's Table 3)."""
        self.day_expo += [slots, matched]
        if sources is not None and len(sources):
            known = sources[sources >= 0].astype(np.int64)
            self.day_by_source += np.bincount(known, minlength=len(RETRIEVALS))[: len(RETRIEVALS)]

    def record_match(self, kind: str, user_rows: np.ndarray, now: int, item_row: int) -> None:
        self.matches[kind].append(np.stack([user_rows, np.full(len(user_rows), now, np.int64),
                                            np.full(len(user_rows), item_row)]))

    def close_day(self, ts: int, n_users: int) -> dict[str, float]:
        """The day ends at ``ts``: hit rates of matches whose window closed, |M_u| histograms of the day's matches,
        coverage and budget use over the arm's ``n_users`` known users; the day's records are reset."""
        out: dict[str, float] = {}
        keys = np.sort(np.concatenate(self.request_keys)) if self.request_keys else np.zeros(0, np.int64)
        new = np.concatenate(self.day_new) if self.day_new else np.zeros(0, np.int64)
        if len(new):
            out["new_items"] = float(len(new))
            out["coverage.user_side"] = float(self.user_retrieved[new, 0].mean())
            out["coverage.user_side.two_tower"] = float(self.user_retrieved[new, 1].mean())
        for kind, parts in self.matches.items():
            m = np.concatenate(parts, 1) if parts else np.zeros((3, 0), np.int64)
            today = m[:, m[1] > ts - SECONDS_PER_DAY]
            if len(new) and kind != "no_activity":
                out[f"coverage.creator_side.{kind}"] = float(np.isin(new, today[2]).mean())
            if kind != "no_activity":  # |M_u| over the arm's known users, from the day's matches
                size = np.bincount(today[0], minlength=n_users)[:n_users]
                edges = list(MSIZE_BINS) + [max(MSIZE_BINS[-1] + 1, int(size.max(initial=0)) + 1)]
                for lo, count in zip(MSIZE_BINS, np.histogram(size, bins=edges)[0]):
                    out[f"msize.{kind}.bin{lo}"] = float(count)
                out[f"msize.{kind}.max"] = float(size.max(initial=0))
                out[f"msize.{kind}.share_zero"] = float((size == 0).mean()) if n_users else float("nan")
            closed = m[1] + self.ttl <= ts
            if closed.any():
                out[f"hit_rate.{kind}"] = float(_visited_within(keys, m[0, closed], m[1, closed], self.ttl).mean())
                out[f"hit_pairs.{kind}"] = float(closed.sum())
            self.matches[kind] = [m[:, ~closed]]
        # requests still needed: those that can answer an open match
        self.request_keys = [keys[(keys & ((1 << 40) - 1)) > ts - self.ttl]] if len(keys) else []
        out["expo_share"] = float(self.day_expo[1] / max(self.day_expo[0], 1))
        for name, count in zip(RETRIEVALS, self.day_by_source):
            out[f"served_by.{name}"] = float(count)
        self.day_new = []
        self.user_retrieved[:] = False
        self.day_expo[:] = 0
        self.day_by_source[:] = 0
        return out

