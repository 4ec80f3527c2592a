"""The world: responses to exposures (observed where logged, else the oracle), the item catalogue, new uploads.

Arms never see this object; the driver passes them only item features and sampled responses.
"""

from __future__ import annotations

import copy

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from simulator.core.config import WorldConfig
from simulator.world.creators import CreatorReference
from simulator.core.ids import IdMap
from simulator.world.oracle import fit_oracle, pair_labels
from simulator.world.response import ResponseModel
from simulator.core.schema import INTERACTION_TYPES, RESPONSE_TYPES, SECONDS_PER_DAY, Log


class World:
    """Response model + observed outcomes + the catalogue of every item (logged and dynamic)."""

    def __init__(self, log: Log, cfg: WorldConfig, seed: int, response: ResponseModel | None = None):
        self.cfg = cfg
        if response is None:
            # the world registers dynamic uploads in its response model: own a copy of the log's truth so
            # one run never changes the Log that another run (same or other seed) replays
            response = copy.deepcopy(log.truth) if log.truth is not None else fit_oracle(log, cfg, seed)
        self.response = response
        items = log.items
        self.feature_cols = [c for c in items.column_names if c.startswith("f_")]
        self.items = IdMap(items["item_id"].to_numpy(), "item")
        self.item_creator = items["creator_id"].to_numpy().astype(np.int64)
        self.item_upload_ts = items["upload_ts"].to_numpy().astype(np.int64)
        self.item_category = items["category"].to_numpy().astype(np.int64)
        self.item_dense = (
            np.stack([items[c].to_numpy().astype(np.float32) for c in self.feature_cols], 1)
            if self.feature_cols else np.zeros((items.num_rows, 1), np.float32)
        )
        self.next_item_id = int(self.items.ids.max()) + 1 if len(self.items) else 0
        # observed outcomes: (user, item) pairs of the log -> bitmask of their responses
        self._obs_keys = np.empty(0, np.int64)
        self._obs_resp = np.empty((0, len(RESPONSE_TYPES)), bool)
        self._obs_users = IdMap(what="user")
        if cfg.use_observed_outcomes:
            pairs = pair_labels(log)
            self._obs_users = IdMap(pairs["user_id"].unique(maintain_order=True).to_numpy(), "user")
            keys = self._keys(pairs["user_id"].to_numpy(), pairs["item_id"].to_numpy())
            order = np.argsort(keys)
            self._obs_keys = keys[order]
            self._obs_resp = pairs.select(list(RESPONSE_TYPES)).to_numpy().astype(bool)[order]

    def _keys(self, user_ids: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
        ur = self._obs_users.rows(user_ids, strict=False)
        ir = self.items.rows(item_ids, strict=False)
        return np.where((ur >= 0) & (ir >= 0), (ur << 32) | ir, -1)

    def respond(self, user_ids: np.ndarray, item_ids: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """(n, 5) bool responses (like, comment, follow, share, view) to exposures of ``item_ids`` to ``user_ids``."""
        out = self.response.sample(user_ids, item_ids, rng) if len(user_ids) else np.zeros((0, len(RESPONSE_TYPES)), bool)
        if len(self._obs_keys) and len(user_ids):
            k = self._keys(user_ids, item_ids)
            pos = np.minimum(np.searchsorted(self._obs_keys, k), len(self._obs_keys) - 1)
            hit = (self._obs_keys[pos] == k) & (k >= 0)
            out[hit] = self._obs_resp[pos[hit]]
        return out

    def item_table(self, item_ids: np.ndarray) -> dict[str, np.ndarray]:
        """What an arm may know about items: ids, creator, upload time, category, content features."""
        r = self.items.rows(item_ids)
        return {
            "item_id": self.items.ids[r], "creator_id": self.item_creator[r], "upload_ts": self.item_upload_ts[r],
            "category": self.item_category[r], "dense": self.item_dense[r],
        }

    def create_items(self, creator_ids: np.ndarray, day: int, t0: int, rng: np.random.Generator) -> np.ndarray:
        """Uploads that creator dynamics add: new ids, the creator's main category, upload time in ``day``.

        The response model draws each new item's truth around its creator's; content features come from
        it too where it has them (:meth:`ResponseModel.item_content`, e.g. the synthetic truth's
        ``f_content_*``); other feature columns (a real log's metadata, ``f_duration``) copy the creator's
        latest item, jittered.
        """
        n = len(creator_ids)
        if n == 0:
            return np.empty(0, np.int64)
        creator_ids = np.asarray(creator_ids, np.int64)
        ids = np.arange(self.next_item_id, self.next_item_id + n, dtype=np.int64)
        self.next_item_id += n
        # category: the creator's most frequent category so far; fallback features: the creator's latest item, jittered
        df = pl.DataFrame({"c": self.item_creator, "k": self.item_category, "r": np.arange(len(self.item_creator))})
        prof = df.group_by("c").agg(pl.col("k").mode().min().alias("k"), pl.col("r").max().alias("r")).sort("c")
        pc_ = prof["c"].to_numpy()
        pos = np.minimum(np.searchsorted(pc_, creator_ids), len(pc_) - 1)
        known = pc_[pos] == creator_ids
        cat = np.where(known, prof["k"].to_numpy()[pos], 0)
        src = np.where(known, prof["r"].to_numpy()[pos], 0)
        dense = self.item_dense[src] * rng.lognormal(0, 0.1, (n, 1)).astype(np.float32)
        ts = t0 + day * SECONDS_PER_DAY + rng.integers(0, SECONDS_PER_DAY, n)
        self.response.register_items(ids, creator_ids, rng)
        content = self.response.item_content(ids)
        for j, col in enumerate(self.feature_cols):
            if col in content:
                dense[:, j] = content[col]
        self.items.add(ids)
        self.item_creator = np.concatenate([self.item_creator, creator_ids])
        self.item_upload_ts = np.concatenate([self.item_upload_ts, ts.astype(np.int64)])
        self.item_category = np.concatenate([self.item_category, cat.astype(np.int64)])
        self.item_dense = np.concatenate([self.item_dense, dense.astype(np.float32)])
        return ids

    # ---- checkpoint: the parts that change during a run
    def state(self) -> dict:
        return {"ids": self.items.ids.copy(), "creator": self.item_creator, "upload_ts": self.item_upload_ts,
                "category": self.item_category, "dense": self.item_dense, "next": self.next_item_id,
                "response": self.response}

    def load_state(self, st: dict) -> None:
        self.items = IdMap(st["ids"], "item")
        self.item_creator, self.item_upload_ts = st["creator"], st["upload_ts"]
        self.item_category, self.item_dense = st["category"], st["dense"]
        self.next_item_id, self.response = st["next"], st["response"]


def creator_reference(log: Log, t0: int, days: int, baseline_days: int = 7) -> CreatorReference:
    """What creator dynamics measure each creator of ``log.items`` against (:class:`CreatorReference`).

    Reference days: the log's pre-period, every day before ``t0`` from the first event's day on, when the
    log has events before ``t0``; otherwise (a log replayed from its first day) the run's first
    ``min(baseline_days, days)`` days, i.e. the logging policy's level on them. Per creator and reference
    day: the ``expose`` events and the like/comment/follow events its items got. Upload rate: the creator's
    uploads the replayed log schedules in days ``0..days-1``, per day, floored at 10% of the mean rate
    (silent creators can still come back).
    """
    items = pl.from_arrow(log.items.select(["item_id", "creator_id", "upload_ts"]))
    creators = np.unique(items["creator_id"].to_numpy()).astype(np.int64)
    ev = pl.from_arrow(log.events.select(["ts", "item_id", "event"]))
    first_day = (int(ev["ts"].min()) - t0) // SECONDS_PER_DAY if ev.height else 0
    pre_period = first_day < 0
    lo, n_ref = (first_day, -first_day) if pre_period else (0, min(baseline_days, days))
    ev = ev.filter(pl.col("event").is_in(["expose", *INTERACTION_TYPES])).with_columns(
        ((pl.col("ts") - t0) // SECONDS_PER_DAY - lo).alias("col"), (pl.col("event") == "expose").alias("is_expose"))
    ev = ev.filter((pl.col("col") >= 0) & (pl.col("col") < n_ref))
    agg = ev.join(items.select(["item_id", "creator_id"]), on="item_id").group_by(["creator_id", "col", "is_expose"]).len()
    counts = {True: np.zeros((len(creators), n_ref)), False: np.zeros((len(creators), n_ref))}
    for is_expose, matrix in counts.items():
        part = agg.filter(pl.col("is_expose") == is_expose)
        if part.height:
            rows = np.searchsorted(creators, part["creator_id"].to_numpy())
            matrix[rows, part["col"].to_numpy()] = part["len"].to_numpy()
    run = items.filter((pl.col("upload_ts") >= t0) & (pl.col("upload_ts") < t0 + days * SECONDS_PER_DAY))
    cnt = run.group_by("creator_id").len()
    rate = np.zeros(len(creators))
    if cnt.height:
        rate[np.searchsorted(creators, cnt["creator_id"].to_numpy())] = cnt["len"].to_numpy() / days
    rate = np.maximum(rate, 0.1 * max(rate.mean(), 1e-3))  # silent creators can still come back
    return CreatorReference(creator_ids=creators, exposures=counts[True], interactions=counts[False],
                            upload_rate=rate, pre_period=pre_period)


CREATOR_COVARIATES: tuple[str, ...] = ("catalogue_items", "pre_uploads", "pre_interactions")
"""Columns of :func:`creator_covariates`: the creator's activity before ``t0``, nothing after it."""


def creator_covariates(log: Log, t0: int) -> tuple[np.ndarray, np.ndarray]:
    """(creator ids, (C, 3) covariates) for CUPED, fixed before treatment (columns :data:`CREATOR_COVARIATES`).

    Per creator of ``log.items``, with the pre-period the days the log has events for before ``t0`` (from its
    first event; none for a log replayed from its first day): items uploaded before the pre-period (the
    catalogue); items uploaded in the pre-period (the metric ``publications`` itself before treatment, CUPED's
    natural covariate); likes/comments/follows in the log on the creator's items before ``t0``. Nothing at or
    after ``t0``: the uploads the replayed log schedules for the run are the same in every arm, but as a
    covariate they take away the creators' heterogeneity and leave the arm-wide response to its supply of
    exposures, which a bootstrap over creators does not see (docs/metrics.md, "CUPED"), and no real A/B test
    has its future schedule.
    """
    items = pl.from_arrow(log.items.select(["item_id", "creator_id", "upload_ts"]))
    creators = np.unique(items["creator_id"].to_numpy()).astype(np.int64)
    first_event = pc.min(log.events["ts"]).as_py() if log.events.num_rows else None
    pre_start = min(int(first_event), t0) if first_event is not None else t0
    ev = pl.from_arrow(log.events.select(["ts", "item_id", "event"])).filter(
        pl.col("event").is_in(list(INTERACTION_TYPES)) & (pl.col("ts") < t0))
    counts = (
        items.filter(pl.col("upload_ts") < pre_start).group_by("creator_id").len(),
        items.filter((pl.col("upload_ts") >= pre_start) & (pl.col("upload_ts") < t0)).group_by("creator_id").len(),
        ev.join(items.select(["item_id", "creator_id"]), on="item_id").group_by("creator_id").len(),
    )
    cov = np.zeros((len(creators), len(CREATOR_COVARIATES)))
    for j, cnt in enumerate(counts):
        if cnt.height:
            cov[np.searchsorted(creators, cnt["creator_id"].to_numpy()), j] = cnt["len"].to_numpy()
    return creators, cov
