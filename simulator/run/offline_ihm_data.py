"""The IHM offline protocol's data: positives in time order, the time split and test windows, item features, and the
model batches built from them (item histories and user sequences as of a time, SASRec-style training chunks)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import torch

from simulator.core.config import IHMOfflineConfig
from simulator.core.schema import Log

POSITIVE_EVENTS = ("like", "comment")


class Timeline:
    """Values of dense groups in time order (user -> item rows, item -> user ids), queried strictly before a time."""

    def __init__(self, group: np.ndarray, ts: np.ndarray, value: np.ndarray):
        self.t_lo = int(ts.min()) if len(ts) else 0
        self.span = (int(ts.max()) - self.t_lo + 2) if len(ts) else 2
        key = group.astype(np.int64) * self.span + (ts - self.t_lo)
        order = np.argsort(key, kind="stable")
        self.key, self.value = key[order], value[order]

    def bounds(self, groups: np.ndarray, before_ts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """[first, end) positions of each group's values with ts < ``before_ts``."""
        base = groups.astype(np.int64) * self.span
        first = np.searchsorted(self.key, base, side="left")
        end = np.searchsorted(self.key, base + np.clip(np.asarray(before_ts) - self.t_lo, 0, self.span - 1), side="left")
        return first, end

    def last(self, groups: np.ndarray, before_ts: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
        """((n, length) the last ``length`` values before ``before_ts`` in time order, -1 padded; (n,) their count)."""
        first, end = self.bounds(groups, before_ts)
        count = np.minimum(end - first, length)
        positions = (end - count)[:, None] + np.arange(length)[None, :]
        values = (self.value[np.minimum(positions, max(len(self.value) - 1, 0))] if len(self.value)
                  else np.zeros_like(positions))
        padded = np.where(np.arange(length)[None, :] < count[:, None], values, -1)
        return padded.astype(np.int64), count.astype(np.int64)

    def pairs(self, groups: np.ndarray, before_ts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(query index, value) of every value before ``before_ts`` (all of them, not only the last few)."""
        first, end = self.bounds(groups, before_ts)
        lengths = end - first
        rows = np.repeat(np.arange(len(groups)), lengths)
        positions = (np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
                     + np.repeat(first, lengths))
        return rows, self.value[positions]


@dataclass
class ItemTable:
    """Item features by row (torch), plus upload times and row lookup."""

    item_id: np.ndarray  # sorted
    upload_ts: np.ndarray
    features_by_row: dict[str, torch.Tensor]  # item_id, creator_id, category (N,), item_dense (N, F)

    @classmethod
    def of(cls, log: Log) -> "ItemTable":
        items = pl.from_arrow(log.items).sort("item_id")
        dense_columns = [c for c in items.columns if c.startswith("f_")]
        dense = (items.select(dense_columns).to_numpy().astype(np.float32) if dense_columns
                 else np.zeros((items.height, 1), np.float32))
        features = {name: torch.from_numpy(items[name].to_numpy().astype(np.int64))
                    for name in ("item_id", "creator_id", "category")}
        features["item_dense"] = torch.from_numpy(np.ascontiguousarray(dense))
        return cls(item_id=items["item_id"].to_numpy(), upload_ts=items["upload_ts"].to_numpy(), features_by_row=features)

    def __len__(self) -> int:
        return len(self.item_id)

    def features(self, rows: np.ndarray) -> dict[str, torch.Tensor]:
        """The item features at ``rows`` (any shape; -1 padding reads row 0)."""
        safe_rows = torch.from_numpy(np.maximum(rows, 0))
        return {name: values[safe_rows] for name, values in self.features_by_row.items()}


@dataclass
class Positives:
    """One row per (user, item) positive, at its first time, sorted by ts."""

    ts: np.ndarray
    user: np.ndarray  # raw user ids
    user_idx: np.ndarray  # dense 0..U-1
    item: np.ndarray  # item rows

    @classmethod
    def of(cls, log: Log, items: ItemTable, until_ts: int | None = None) -> "Positives":
        events = pl.from_arrow(log.events).filter(pl.col("event").is_in(POSITIVE_EVENTS))
        if until_ts is not None:
            events = events.filter(pl.col("ts") < until_ts)
        first = events.group_by(["user_id", "item_id"]).agg(pl.col("ts").min()).sort(["ts", "user_id", "item_id"])
        user = first["user_id"].to_numpy()
        _, user_idx = np.unique(user, return_inverse=True)
        return cls(ts=first["ts"].to_numpy(), user=user, user_idx=user_idx.astype(np.int64),
                   item=np.searchsorted(items.item_id, first["item_id"].to_numpy()))

    def __len__(self) -> int:
        return len(self.ts)


@dataclass
class Split:
    """The protocol's time split and windows, and the training counts behind tail/head."""

    split_ts: int
    end_ts: int
    edges: np.ndarray  # (W+1,) window boundaries
    train: np.ndarray  # positive rows
    test: np.ndarray  # positive rows (sampled per window), sorted by ts
    window: np.ndarray  # (len(test),) 0..W-1
    train_count: np.ndarray  # (N items,) training positives per item

    @classmethod
    def of(cls, positives: Positives, n_items: int, config: IHMOfflineConfig, seed: int) -> "Split":
        if len(positives) < 4:
            raise ValueError(f"the log has {len(positives)} positive interactions; the IHM protocol needs a few at least")
        split_ts = int(np.median(positives.ts))
        train = np.flatnonzero(positives.ts < split_ts)
        end_ts = int(positives.ts.max()) + 1
        if config.windows_by == "horizon":  # only the first horizon_days after the split are scored
            end_ts = min(end_ts, split_ts + int(round(config.horizon_days * 86_400)))
        test_all = np.flatnonzero((positives.ts >= split_ts) & (positives.ts < end_ts))
        if config.windows_by == "count" and len(test_all):  # windows of (about) the same number of positives
            inner = np.quantile(positives.ts[test_all], np.arange(1, config.windows) / config.windows)
            edges = np.concatenate([[split_ts], np.ceil(inner), [end_ts]]).astype(np.float64)
        else:  # equal durations
            edges = split_ts + (end_ts - split_ts) * np.arange(config.windows + 1) / config.windows
        window_all = np.clip(np.searchsorted(edges, positives.ts[test_all], side="right") - 1, 0, config.windows - 1)
        rng = np.random.default_rng([seed, 0x1B4])
        keep = []
        for window in range(config.windows):
            rows = test_all[window_all == window]
            if len(rows) > config.max_eval_per_window:
                rows = np.sort(rng.choice(rows, config.max_eval_per_window, replace=False))
            keep.append(rows)
        test = np.sort(np.concatenate(keep))
        test_window = np.clip(np.searchsorted(edges, positives.ts[test], side="right") - 1, 0, config.windows - 1)
        return cls(split_ts=split_ts, end_ts=end_ts, edges=edges, train=train, test=test, window=test_window,
                   train_count=np.bincount(positives.item[train], minlength=n_items))


class Batches:
    """Builds model batches: item rows + their histories at given times, user sequences at given times."""

    def __init__(self, positives: Positives, items: ItemTable, seq_len: int, max_history: int,
                 known_users: np.ndarray | None = None):
        self.positives, self.items = positives, items
        self.user_items = Timeline(positives.user_idx, positives.ts, positives.item)  # user -> item rows
        self.item_users = Timeline(positives.item, positives.ts, positives.user)  # item row -> raw user ids
        # test-time histories: only the users in ``known_users`` (bool by user_idx), when given
        if known_users is not None:
            keep = known_users[positives.user_idx]
            self.item_users_eval = Timeline(positives.item[keep], positives.ts[keep], positives.user[keep])
        else:
            self.item_users_eval = self.item_users
        self.seq_len, self.max_history = seq_len, max_history

    @classmethod
    def of(cls, positives: Positives, items: ItemTable, config: IHMOfflineConfig, train_rows: np.ndarray) -> "Batches":
        """The protocol's batches for a split whose training positives are ``train_rows``: with
        ``config.known_users_only``, test-time histories keep only the users with one of them."""
        known = None
        if config.known_users_only:
            known = np.zeros(int(positives.user_idx.max()) + 1, bool)
            known[positives.user_idx[train_rows]] = True
        return cls(positives, items, config.model.seq_len, config.model.max_history, known)

    def item_batch(self, rows: np.ndarray, hist_ts: np.ndarray | None, test: bool = False) -> dict:
        """Item features at ``rows``; histories: users before ``hist_ts`` (None: no history; ``test``:
        only the known users)."""
        batch = self.items.features(rows)
        if hist_ts is None:
            batch["hist_users"] = torch.zeros((len(rows), 1), dtype=torch.int64)
            batch["hist_len"] = torch.zeros(len(rows), dtype=torch.int64)
        else:
            timeline = self.item_users_eval if test else self.item_users
            history, length = timeline.last(rows, hist_ts, self.max_history)
            batch["hist_users"], batch["hist_len"] = torch.from_numpy(history), torch.from_numpy(length)
        batch["item_row"] = torch.from_numpy(np.asarray(rows, np.int64))
        return batch

    def seq_batch(self, user_idx: np.ndarray, ts: np.ndarray) -> dict:
        sequence, length = self.user_items.last(user_idx, ts, self.seq_len)
        batch = self.items.features(sequence)
        batch["seq_len"] = torch.from_numpy(length)
        return batch

    def train_batch(self, chunks: "Chunks", ids: np.ndarray) -> dict:
        """The batch of chunks ``ids``: their sequences and every target in them (all-position training)."""
        positives = self.positives
        selected = np.concatenate([np.arange(chunks.t_start[c], chunks.t_start[c + 1]) for c in ids])
        target = chunks.t_row[selected]  # positive rows
        local = np.repeat(np.arange(len(ids)), chunks.t_start[ids + 1] - chunks.t_start[ids])
        batch = self.item_batch(positives.item[target], positives.ts[target])
        batch["seq"] = self.items.features(chunks.seq[ids])
        batch["seq"]["seq_len"] = torch.from_numpy(chunks.seq_len[ids])
        batch["target_seq"] = torch.from_numpy(local)
        batch["target_pos"] = torch.from_numpy(chunks.t_pos[selected])
        return batch


@dataclass
class Chunks:
    """Training sequences: each user's training positives in time order, cut into windows of at most L
    items ending every S = L // 2 items from the last one; a window's targets are its last S items (all of
    them for the user's first window), so every positive is a target once, with at least L - S items
    of context when the user has them (SASRec's all-position training)."""

    seq: np.ndarray  # (C, L) item rows, -1 padded
    seq_len: np.ndarray  # (C,)
    t_start: np.ndarray  # (C+1,) chunk c's targets are t_row[t_start[c]:t_start[c+1]]
    t_row: np.ndarray  # positive rows
    t_pos: np.ndarray  # position in the chunk's sequence whose output predicts the target

    @classmethod
    def of(cls, positives: Positives, rows: np.ndarray, max_len: int) -> "Chunks":
        stride = max(1, max_len // 2)
        rows = rows[np.lexsort((positives.ts[rows], positives.user_idx[rows]))]
        users = positives.user_idx[rows]
        cuts = np.flatnonzero(np.diff(users)) + 1
        seqs, lens, starts, t_row, t_pos = [], [], [0], [], []
        for user_rows in np.split(rows, cuts):
            end = len(user_rows)
            while end > 0:
                start = max(0, end - max_len)
                first_target = 0 if start == 0 else end - stride
                seqs.append(np.pad(positives.item[user_rows[start:end]], (0, max_len - (end - start)), constant_values=-1))
                lens.append(end - start)
                t_row.append(user_rows[first_target:end])
                t_pos.append(np.arange(first_target, end) - start)
                starts.append(starts[-1] + end - first_target)
                if start == 0:
                    break
                end -= stride
        if not seqs:
            return cls(np.zeros((0, max_len), np.int64), np.zeros(0, np.int64), np.zeros(1, np.int64),
                       np.zeros(0, np.int64), np.zeros(0, np.int64))
        return cls(np.stack(seqs).astype(np.int64), np.array(lens, np.int64), np.array(starts, np.int64),
                   np.concatenate(t_row), np.concatenate(t_pos).astype(np.int64))

    def __len__(self) -> int:
        return len(self.seq_len)
