"""The arm's real-time feature store: counters, seen pairs, positive-user sequences and who follows whom.

Everything is held in growable numpy arrays indexed by dense rows (an :class:`IdMap` per
entity), updated in place by ``record`` once per batch of feedback; nothing here is per-user
Python. The store is what an arm knows: its own uploads and its own traffic, never the world.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulator.core.schema import N_PAIR_DENSE, N_USER_DENSE
from simulator.core.ids import IdMap
from trainers.checkpoint import capture, converted, id_map, restore

SEQ_EVENTS = (0, 1)  # like, comment: the positive interactions that extend an item's user sequence
INTERACTION_COLS = (0, 1, 2)  # like, comment, follow
FOLLOW_COL = 2  # a follow label: the user now follows the item's creator


def grow_rows(a: np.ndarray, n: int, fill=0) -> np.ndarray:
    """``a`` with at least ``n`` rows (new rows = ``fill``), reallocated geometrically: amortised O(1) per row."""
    if len(a) >= n:
        return a
    new = np.full((max(n, 2 * len(a), 64),) + a.shape[1:], fill, dtype=a.dtype)
    new[: len(a)] = a
    return new


def sequence_tail(seq: np.ndarray, length: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The last ``size`` entries of left-aligned, -1 padded rows (the most recent, for time-ordered sequences),
    left-aligned again: ((n, size) entries, -1 padded; (n,) lengths, at most ``size``)."""
    tail_length = np.minimum(length, size)
    if seq.shape[1] == 0:
        return np.full((len(seq), size), -1, np.int64), tail_length
    source = (length - tail_length)[:, None] + np.arange(size)[None, :]
    tail = np.take_along_axis(seq, np.minimum(source, seq.shape[1] - 1), 1)
    return np.where(np.arange(size)[None, :] < tail_length[:, None], tail, -1), tail_length


def _ring_read(buffer: np.ndarray, count: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-key ring buffers (rows of ``buffer``, ``count`` appends each) in append order: ((n, L) positions into
    each row, oldest first; (n, L) bool, True where a slot holds an entry; (n,) lengths)."""
    size = buffer.shape[1]
    length = np.minimum(count, size)
    start = np.where(count > size, count % size, 0)
    position = (start[:, None] + np.arange(size)[None, :]) % size
    return position, np.arange(size)[None, :] < length[:, None], length


def _ring_append(buf: np.ndarray, buf_ts: np.ndarray | None, count: np.ndarray, keys: np.ndarray,
                 values: np.ndarray, ts: np.ndarray) -> None:
    """Append ``values`` to the per-key ring buffers ``buf[key]`` (and their times to ``buf_ts``) in time order."""
    order = np.lexsort((ts, keys))
    k, v, t = keys[order], values[order], ts[order]
    starts = np.r_[0, np.flatnonzero(np.diff(k)) + 1]
    counts = np.diff(np.r_[starts, len(k)])
    rank = np.arange(len(k)) - np.repeat(starts, counts)
    slot = (count[k] + rank) % buf.shape[1]
    buf[k, slot] = v
    if buf_ts is not None:
        buf_ts[k, slot] = t
    np.add.at(count, k[starts], counts)


class SortedRuns:
    """A growing set of int64 keys held as disjoint sorted runs, largest first, merged LSM-style.

    ``add`` appends a round's new keys as a run and merges the last two runs while the older is at most
    ``merge_factor`` (f) times the newer, so run sizes shrink geometrically (O(log_f n) runs) and each key
    is merged O(f log_f n) times: O(n log n) in all, where re-merging one sorted array every round is O(n^2).
    ``contains`` searches every run, so fewer runs make queries cheaper: with a default run's rounds
    (~25k keys each, ~5M in all) a factor of 16 keeps 2-3 runs and costs the least add + query
    (``benchmarks/bench_seen_set.py --merge-factor``). Its answers are those of one sorted array of all keys.
    """

    def __init__(self, sorted_keys: np.ndarray | None = None, merge_factor: float = 16.0):
        """An empty set, or one holding ``sorted_keys`` (sorted, no duplicates: what :meth:`keys` returns)."""
        self.merge_factor = merge_factor
        self.runs: list[np.ndarray] = []
        if sorted_keys is not None and len(sorted_keys):
            self.runs.append(np.asarray(sorted_keys, np.int64))

    def __len__(self) -> int:
        return sum(len(run) for run in self.runs)

    def contains(self, keys: np.ndarray) -> np.ndarray:
        """Whether each key (any shape) is in the set: bool, the shape of ``keys``."""
        keys = np.asarray(keys, np.int64)
        found = np.zeros(keys.shape, bool)
        for run in self.runs:
            pos = np.minimum(np.searchsorted(run, keys), len(run) - 1)
            found |= run[pos] == keys
        return found

    def add(self, keys: np.ndarray) -> None:
        """Add keys (any order, duplicates and keys already in the set allowed)."""
        new = np.sort(np.asarray(keys, np.int64).ravel())  # sort + neighbours: np.unique hashes first (slower)
        new = new[np.r_[True, new[1:] != new[:-1]]] if len(new) else new
        if self.runs and len(new):
            new = new[~self.contains(new)]
        if not len(new):
            return
        self.runs.append(new)
        while len(self.runs) > 1 and len(self.runs[-2]) <= self.merge_factor * len(self.runs[-1]):
            newer = self.runs.pop()
            self.runs[-1] = _merge_disjoint([self.runs[-1], newer])

    def keys(self) -> np.ndarray:
        """Every key, sorted (a new array)."""
        return _merge_disjoint(self.runs)


def _merge_disjoint(runs: list[np.ndarray]) -> np.ndarray:
    """The sorted union of sorted arrays with no key in common (a new array)."""
    merged = np.concatenate(runs) if runs else np.zeros(0, np.int64)
    merged.sort(kind="stable")  # timsort finds the sorted runs and merges them: O(n log(number of runs))
    return merged


@dataclass
class FeatureStoreState:
    """What a :class:`FeatureStore` checkpoints: its id maps and every counter, sequence and pair set."""

    items: np.ndarray = id_map()
    users: np.ndarray = id_map()
    creators: np.ndarray = id_map()
    item_creator: np.ndarray
    item_upload_ts: np.ndarray
    item_category: np.ndarray
    item_dense: np.ndarray
    item_expo: np.ndarray
    item_inter: np.ndarray
    item_recent: np.ndarray
    item_seq: np.ndarray
    item_seq_ts: np.ndarray
    item_seq_count: np.ndarray
    user_requests: np.ndarray
    user_expo: np.ndarray
    user_inter: np.ndarray
    user_seq: np.ndarray
    user_seq_count: np.ndarray
    seen: np.ndarray = converted(lambda seen: seen.keys(), lambda seen, saved: SortedRuns(saved))  # sorted keys
    follows: np.ndarray


class FeatureStore:
    """Items, users and their counters for one arm; ``max_seq`` positive users kept per item and
    ``max_user_seq`` positive items (item rows) per user (the sequential user towers' input)."""

    N_USER_DENSE = N_USER_DENSE
    N_PAIR_DENSE = N_PAIR_DENSE
    NOT_SAVED = ("n_item_dense", "max_seq", "max_user_seq", "_by_upload")  # sizes; a cache of upload order

    def __init__(self, n_item_dense: int, max_seq: int = 50, max_user_seq: int = 50):
        self.items = IdMap(what="item")
        self.users = IdMap(what="user")
        self.n_item_dense = max(1, n_item_dense)
        self.max_seq = max_seq
        z = np.zeros
        self.item_creator = z(0, np.int64)
        self.item_upload_ts = z(0, np.int64)
        self.item_category = z(0, np.int64)
        self.item_dense = z((0, self.n_item_dense), np.float32)
        self.item_expo = z(0, np.int64)
        self.item_inter = z(0, np.float64)
        self.item_recent = z(0, np.float64)  # exponentially decayed interactions (popularity)
        self.item_seq = np.full((0, max_seq), -1, np.int64)  # ring buffer of user ids
        self.item_seq_ts = z((0, max_seq), np.int64)
        self.item_seq_count = z(0, np.int64)
        self.user_requests = z(0, np.int64)
        self.user_expo = z(0, np.int64)
        self.user_inter = z(0, np.float64)
        self.seen = SortedRuns()  # keys user_row << 32 | item_row of every pair shown
        self.max_user_seq = max_user_seq
        self.user_seq = np.full((0, max_user_seq), -1, np.int64)  # ring buffer of item rows
        self.user_seq_count = z(0, np.int64)
        self.creators = IdMap(what="creator")  # creators somebody follows
        self.follows = z(0, np.int64)  # sorted keys user_row << 32 | creator_row: who follows whom
        self._by_upload: np.ndarray | None = None

    # ---- items
    @property
    def n_items(self) -> int:
        return len(self.items)

    def add_items(self, item_ids, creator_ids, upload_ts, category, dense) -> np.ndarray:
        """Register uploaded items (ids already known are left as they are); returns their rows."""
        item_ids = np.asarray(item_ids, np.int64)
        known = self.items.contains(item_ids)
        n_old = self.n_items
        rows = self.items.add(item_ids)
        n = self.n_items
        if n > n_old:
            new = ~known
            for name in ("item_creator", "item_upload_ts", "item_category", "item_expo", "item_inter",
                         "item_recent", "item_seq_count"):
                setattr(self, name, grow_rows(getattr(self, name), n))
            self.item_dense = grow_rows(self.item_dense, n)
            self.item_seq = grow_rows(self.item_seq, n, fill=-1)
            self.item_seq_ts = grow_rows(self.item_seq_ts, n)
            r = rows[new]
            self.item_creator[r] = np.asarray(creator_ids, np.int64)[new]
            self.item_upload_ts[r] = np.asarray(upload_ts, np.int64)[new]
            self.item_category[r] = np.asarray(category, np.int64)[new]
            d = np.asarray(dense, np.float32).reshape(len(item_ids), -1)
            if d.shape[1] == 0:
                d = np.zeros((len(item_ids), 1), np.float32)
            if not np.isfinite(d).all():
                raise ValueError("upload_items: NaN or infinite item features")
            self.item_dense[r] = d[new][:, : self.n_item_dense]
            self._by_upload = None
        return rows

    def rows_by_upload(self) -> np.ndarray:
        """Item rows sorted by upload time (cached until the next upload)."""
        if self._by_upload is None:
            self._by_upload = np.argsort(self.item_upload_ts[: self.n_items], kind="stable")
        return self._by_upload

    # ---- users
    def ensure_users(self, user_ids: np.ndarray) -> np.ndarray:
        rows = self.users.add(np.asarray(user_ids, np.int64))
        n = len(self.users)
        for name in ("user_requests", "user_expo", "user_inter", "user_seq_count"):
            setattr(self, name, grow_rows(getattr(self, name), n))
        self.user_seq = grow_rows(self.user_seq, n, fill=-1)
        return rows

    def user_dense(self, rows: np.ndarray) -> np.ndarray:
        req = self.user_requests[rows].astype(np.float32)
        inter = self.user_inter[rows].astype(np.float32)
        expo = self.user_expo[rows].astype(np.float32)
        return np.stack([np.log1p(req), np.log1p(inter), (inter + 0.1) / (expo + 2.0)], 1)  # (n, 3)

    def pair_dense(self, item_rows: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """(n, C, 3): log item age in hours, log exposures, smoothed interaction rate."""
        r = np.maximum(item_rows, 0)
        age_h = np.maximum(ts[:, None] - self.item_upload_ts[r], 0) / 3600.0
        expo = self.item_expo[r].astype(np.float32)
        inter = self.item_inter[r].astype(np.float32)
        return np.stack([np.log1p(age_h), np.log1p(expo), (inter + 0.5) / (expo + 10.0)], -1).astype(np.float32)

    # ---- seen filter
    @staticmethod
    def pair_keys(user_rows: np.ndarray, item_rows: np.ndarray) -> np.ndarray:
        return (np.asarray(user_rows, np.int64) << 32) | np.asarray(item_rows, np.int64)

    def is_seen(self, user_rows: np.ndarray, item_rows: np.ndarray) -> np.ndarray:
        """Whether each (user row, item row) pair was recorded as shown: bool, the broadcast shape."""
        return self.seen.contains(self.pair_keys(user_rows, item_rows))

    # ---- feedback
    def record(self, user_ids: np.ndarray, item_ids: np.ndarray, ts: np.ndarray, labels: np.ndarray,
               decay: float = 0.9) -> np.ndarray:
        """Apply one batch of exposures with responses ``labels`` (n, 5: like, comment, follow, share, view).

        Returns the item rows that gained a positive (like/comment) interaction.
        """
        ur = self.ensure_users(user_ids)
        ir = self.items.rows(item_ids)
        labels = np.asarray(labels, bool)
        inter = labels[:, list(INTERACTION_COLS)].sum(1).astype(np.float64)
        np.add.at(self.item_expo, ir, 1)
        np.add.at(self.item_inter, ir, inter)
        self.item_recent[: self.n_items] *= decay
        np.add.at(self.item_recent, ir, inter)
        np.add.at(self.user_expo, ur, 1)
        np.add.at(self.user_inter, ur, inter)
        self.seen.add(self.pair_keys(ur, ir))
        fol = labels[:, FOLLOW_COL]
        if fol.any():
            self.add_follows(ur[fol], self.item_creator[ir[fol]])
        pos = labels[:, list(SEQ_EVENTS)].any(1)
        if pos.any():
            self._append_sequences(ir[pos], np.asarray(user_ids, np.int64)[pos], np.asarray(ts, np.int64)[pos])
            _ring_append(self.user_seq, None, self.user_seq_count, ur[pos], ir[pos], np.asarray(ts, np.int64)[pos])
        return np.unique(ir[pos])

    def _append_sequences(self, item_rows: np.ndarray, user_ids: np.ndarray, ts: np.ndarray) -> None:
        _ring_append(self.item_seq, self.item_seq_ts, self.item_seq_count, item_rows, user_ids, ts)

    def sequences(self, item_rows: np.ndarray, with_ts: bool = False):
        """Each item's last ``max_seq`` positive users in time order: ((n, L) ids with -1 padding at the end, lengths)
        and, with ``with_ts``, the (n, L) times of those interactions as a third element."""
        position, filled, length = _ring_read(self.item_seq, self.item_seq_count[item_rows])
        seq = np.where(filled, np.take_along_axis(self.item_seq[item_rows], position, 1), -1)
        if with_ts:
            return seq, length, np.where(filled, np.take_along_axis(self.item_seq_ts[item_rows], position, 1), 0)
        return seq, length

    def user_sequences(self, user_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each user's last ``max_user_seq`` positive (like/comment) items in time order: ((n, L) item rows,
        -1 padding at the end; (n,) lengths)."""
        position, filled, length = _ring_read(self.user_seq, self.user_seq_count[user_rows])
        return np.where(filled, np.take_along_axis(self.user_seq[user_rows], position, 1), -1), length

    # ---- follows
    def add_follows(self, user_rows: np.ndarray, creator_ids: np.ndarray) -> None:
        """Record that each user (row) follows the aligned creator (id); following twice changes nothing."""
        keys = (np.asarray(user_rows, np.int64) << 32) | self.creators.add(np.asarray(creator_ids, np.int64))
        self.follows = np.union1d(self.follows, keys)

    def followed(self, user_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Who the users follow, as pairs: (positions into ``user_rows``, creator rows of ``creators``)."""
        user_rows = np.asarray(user_rows, np.int64)
        lo = np.searchsorted(self.follows, user_rows << 32)
        hi = np.searchsorted(self.follows, (user_rows + 1) << 32)
        n = hi - lo
        pos = np.repeat(np.arange(len(user_rows)), n)
        idx = np.repeat(lo - np.cumsum(n) + n, n) + np.arange(n.sum())
        return pos, self.follows[idx] & 0xFFFFFFFF

    def n_followers(self, creator_ids: np.ndarray) -> np.ndarray:
        """Followers each creator (id) has in the arm; 0 for creators nobody follows."""
        rows = self.creators.rows(np.asarray(creator_ids, np.int64), strict=False)
        counts = np.bincount(self.follows & 0xFFFFFFFF, minlength=len(self.creators))
        return np.where(rows >= 0, counts[np.maximum(rows, 0)] if len(counts) else 0, 0)

    # ---- checkpoint
    def state(self) -> FeatureStoreState:
        return capture(self, FeatureStoreState)

    def load_state(self, state: FeatureStoreState) -> None:
        restore(self, state)
        self._by_upload = None
