"""The embedded synthetic platform: seeded users, creators, items and a logged history, with its ground truth.

Users have latent interests (a main and a secondary topic), heterogeneous, weekly-patterned activity
and a heavy-tailed propensity to interact; creators have a topic direction, a Zipf-tailed quality and a
lognormal upload rate. Every item has its own latent direction around its creator's, its own
heavy-tailed quality and content features that predict its latent vector only partly
(:class:`CreatorItemPrior`, the same distribution for logged items and for the items creator dynamics
add later). The log is what a popularity/recency logging policy exposed during ``pre_days`` days of
history and the ``days`` replayed days, with responses drawn from the ground-truth
:class:`~simulator.world.response.LatentFactorResponse`, which the log carries as ``truth`` so the world can
use it as its oracle. docs/world.md describes every mechanism and its parameters.

Optionally a real catalogue (``catalogue``: item_id, creator_id, upload_ts, category, f_*),
e.g. KuaiRand-Pure's video->author table, replaces the generated creators and items.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from simulator.core.config import SyntheticConfig
from simulator.world.response import (N_RESP, LatentFactorResponse, NewItems, _logit, _sigmoid, around_creator, creator_rows,
                                unit)
from simulator.core.schema import RESPONSE_TYPES, SECONDS_PER_DAY, Log, validate_log

T0 = 1_767_225_600  # 2026-01-01 00:00:00 UTC, a Thursday: simulated day 0 (``log.meta["start_ts"]``)
CATALOGUE_DAYS = 14  # catalogue items are spread over this many days before the pre-period
BASE_RATES = {"like": 0.052, "comment": 0.010, "follow": 0.0054, "share": 0.0050, "view": 0.365}
"""Mean probability of each response over uniformly random (user, item) pairs; the truth's event biases are solved
for it (after the users' propensity and the items' quality)."""
AFFINITY_SCALE = {"like": 3.0, "comment": 2.5, "follow": 2.5, "share": 2.0, "view": 1.5}
QUALITY_SCALE = {"like": 0.6, "comment": 0.5, "follow": 0.6, "share": 0.5, "view": 0.4}
PROPENSITY_EVENTS: tuple[str, ...] = ("like", "comment", "follow", "share")
"""Responses whose logit gets the user's propensity (``view``, the effective view, does not)."""
CALIBRATION_PAIRS = 1 << 18  # random (user, item) pairs the event biases are solved on
RECENT_WINDOW_S = 3 * SECONDS_PER_DAY


@dataclass
class CreatorItemPrior:
    """The synthetic platform's distribution of an item given its creator (logged and dynamic items alike).

    * latent direction ``unit(sqrt(1 - share) c + sqrt(share) z)`` around the creator's unit vector ``c``;
    * quality ``(log q_c + quality_sigma * x - quality_mean) / quality_std``: the creator's log-quality plus
      an item-specific part ``x``, a standardised lognormal of shape ``quality_tail`` (a right tail: hits;
      a standard normal when it is 0), standardised with constants fixed on the logged items;
    * content ``f_content_j`` = a fixed random projection of ``sqrt(r2) (v - mean) + sqrt(1 - r2) eta``,
      ``eta ~ N(0, latent_cov)``, each column divided by its standard deviation: the best linear predictor
      of the latent vector from the content explains exactly ``content_r2`` of its variance.
    """

    creator_ids: np.ndarray  # (C,) sorted
    creator_vecs: np.ndarray  # (C, d) unit
    creator_log_quality: np.ndarray  # (C,)
    share: float
    quality_sigma: float
    quality_tail: float
    quality_mean: float
    quality_std: float
    latent_mean: np.ndarray  # (d,) of the logged items' vectors
    latent_cov_sqrt: np.ndarray  # (d, d) symmetric square root of their covariance
    content_proj: np.ndarray  # (m, d)
    content_r2: float
    content_scale: np.ndarray  # (m,)

    @property
    def content_names(self) -> tuple[str, ...]:
        return tuple(f"f_content_{j}" for j in range(len(self.content_proj)))

    def quality(self, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """(n,) standardised quality of items of the creators at ``rows``."""
        g, tau = rng.standard_normal(len(rows)), self.quality_tail
        if tau > 1e-3:  # standardised lognormal: mean 0, variance 1
            g = (np.exp(tau * g) - np.exp(tau**2 / 2)) / np.sqrt(np.expm1(tau**2) * np.exp(tau**2))
        raw = self.creator_log_quality[rows] + self.quality_sigma * g
        return ((raw - self.quality_mean) / self.quality_std).astype(np.float32)

    def content(self, vecs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """(n, m) content features of items with latent vectors ``vecs``."""
        n, d = vecs.shape
        eta = rng.standard_normal((n, d)) @ self.latent_cov_sqrt  # (n, d), covariance latent_cov
        signal = np.sqrt(self.content_r2) * (vecs - self.latent_mean) + np.sqrt(1.0 - self.content_r2) * eta
        return (signal @ self.content_proj.T / self.content_scale).astype(np.float32)

    def draw(self, creator_ids: np.ndarray, rng: np.random.Generator) -> NewItems:
        rows = creator_rows(self.creator_ids, creator_ids)
        vecs = around_creator(self.creator_vecs[rows], self.share, rng)
        return NewItems(vecs=vecs, quality=self.quality(rows, rng), bias=np.zeros((len(rows), N_RESP), np.float32),
                        content=self.content(vecs, rng))


def _item_prior(cfg: SyntheticConfig, rng: np.random.Generator, creator_ids: np.ndarray, creator_vecs: np.ndarray,
                creator_log_quality: np.ndarray, item_rows: np.ndarray, item_vecs: np.ndarray) -> CreatorItemPrior:
    """The prior of ``cfg``, its standardisation constants fixed on the logged items (``item_rows``, ``item_vecs``)."""
    d = item_vecs.shape[1]
    logq = creator_log_quality[item_rows]
    if len(item_vecs) >= 2:
        mean, cov = item_vecs.mean(0), np.cov(item_vecs, rowvar=False)
    else:
        mean, cov = np.zeros(d), np.eye(d) / d
    lam, vec = np.linalg.eigh(cov)
    cov_sqrt = (vec * np.sqrt(lam.clip(0.0))) @ vec.T
    proj = rng.standard_normal((cfg.n_content, d))
    scale = np.sqrt(np.einsum("md,de,me->m", proj, cov, proj)).clip(1e-9)
    return CreatorItemPrior(
        creator_ids=creator_ids, creator_vecs=creator_vecs, creator_log_quality=creator_log_quality,
        share=cfg.item_specific_share, quality_sigma=cfg.item_quality_sigma, quality_tail=cfg.item_quality_tail,
        quality_mean=float(logq.mean()) if len(logq) else 0.0,
        quality_std=float(np.sqrt((logq.var() if len(logq) else 0.0) + cfg.item_quality_sigma**2)) or 1.0,
        latent_mean=mean, latent_cov_sqrt=cov_sqrt, content_proj=proj, content_r2=cfg.content_r2, content_scale=scale,
    )


def _calibrated_bias(truth: LatentFactorResponse, rng: np.random.Generator) -> np.ndarray:
    """(E,) event biases with which the mean probability over random (user, item) pairs is :data:`BASE_RATES`."""
    u = rng.choice(truth.users.ids, CALIBRATION_PAIRS)
    i = rng.choice(truth.items.ids, CALIBRATION_PAIRS)
    z = truth.logits(u, i).astype(np.float64) - truth.bias  # (n, E) without the event bias
    target = np.array([BASE_RATES[e] for e in RESPONSE_TYPES])
    b = _logit(target)
    for _ in range(30):  # Newton steps on the mean probability, monotone in b
        p = _sigmoid(z + b)
        gap = p.mean(0) - target
        if (np.abs(gap) < 1e-4 * target).all():
            break
        b = b - gap / np.maximum((p * (1 - p)).mean(0), 1e-12)
    return b.astype(np.float32)


def generate_synthetic(
    cfg: SyntheticConfig,
    seed: int = 0,
    catalogue: pa.Table | None = None,
    user_activity: np.ndarray | None = None,
) -> Log:
    """Generate a validated synthetic :class:`Log` (events, items, users, truth) from ``cfg`` and ``seed``.

    Events cover the ``pre_days`` days before :data:`T0` and the ``days`` days from it;
    ``log.meta["start_ts"] = T0`` makes ``log.t0`` day 0 of the simulation.
    """
    rng = np.random.default_rng([seed, 0x5EED])
    d, k = cfg.latent_dim, cfg.n_topics
    D = SECONDS_PER_DAY
    history_start = T0 - (CATALOGUE_DAYS + cfg.pre_days) * D  # first catalogue upload
    topics = unit(rng.standard_normal((k, d))).astype(np.float32)
    topic_pop = 1.0 / np.arange(1, k + 1) ** 0.8
    topic_pop /= topic_pop.sum()

    # --- users: interests, activity, propensity
    n_u = cfg.n_users
    user_ids = np.arange(n_u, dtype=np.int64)
    t1 = rng.choice(k, n_u, p=topic_pop)
    t2 = rng.choice(k, n_u, p=topic_pop)
    user_vecs = unit(topics[t1] + 0.5 * topics[t2] + 0.35 * rng.standard_normal((n_u, d)))
    if user_activity is not None:
        act = np.resize(np.asarray(user_activity, np.float64), n_u)
        act = act / max(act.mean(), 1e-9)
    else:
        act = rng.lognormal(0.0, 0.8, n_u)
        act /= act.mean()
    visit_p = np.clip(cfg.mean_daily_visit_prob * act, 0.01, 0.95)
    propensity = cfg.user_propensity_sigma * rng.standard_normal(n_u)
    user_bias = np.outer(propensity, [e in PROPENSITY_EVENTS for e in RESPONSE_TYPES]).astype(np.float32)  # (U, E)

    # --- creators and items
    if catalogue is None:
        n_c = cfg.n_creators
        creator_ids = np.arange(n_c, dtype=np.int64)
        c_topic = rng.choice(k, n_c, p=topic_pop)
        c_quality = rng.lognormal(0.0, 0.5, n_c) / (rng.permutation(n_c) + 1.0) ** (cfg.popularity_skew * 0.25)
        c_rate = rng.lognormal(0.0, 0.7, n_c)
        c_rate *= cfg.uploads_per_creator_day / c_rate.mean()
        # per creator: catalogue items, uploads during the pre-period and during the run (both at its daily rate)
        n_cat = rng.poisson(cfg.catalogue_items_per_creator, n_c)
        n_pre = rng.poisson(c_rate * cfg.pre_days)
        n_run = rng.poisson(c_rate * cfg.days)
        n_items_c = n_cat + n_pre + n_run
        item_creator_row = np.repeat(np.arange(n_c), n_items_c)
        n_i = len(item_creator_row)
        pos = np.arange(n_i) - np.repeat(np.cumsum(n_items_c) - n_items_c, n_items_c)  # index within the creator
        phase = (pos >= n_cat[item_creator_row]).astype(np.int64) + (pos >= (n_cat + n_pre)[item_creator_row])
        starts = np.array([history_start, T0 - cfg.pre_days * D, T0])[phase]
        spans = np.array([CATALOGUE_DAYS * D, cfg.pre_days * D, cfg.days * D])[phase]
        upload_ts = (starts + (rng.random(n_i) * spans).astype(np.int64)).astype(np.int64)
        item_ids = np.arange(n_i, dtype=np.int64)
        item_creators = creator_ids[item_creator_row]
        category = c_topic[item_creator_row].astype(np.int64)
        feats = {"f_duration": rng.lognormal(0.0, 0.5, n_i).astype(np.float32)}
    else:
        item_ids = catalogue["item_id"].to_numpy().astype(np.int64)
        item_creators = catalogue["creator_id"].to_numpy().astype(np.int64)
        creator_ids, item_creator_row = np.unique(item_creators, return_inverse=True)
        n_c, n_i = len(creator_ids), len(item_ids)
        raw_cat = catalogue["category"].to_numpy().astype(np.int64)
        _, category = np.unique(raw_cat, return_inverse=True)
        category = category.astype(np.int64)
        # topic of a creator = the topic its most common category hashes to
        c_topic = (np.bincount(item_creator_row, weights=category, minlength=n_c)
                   / np.bincount(item_creator_row, minlength=n_c).clip(1)).astype(np.int64) % k
        c_quality = rng.lognormal(0.0, 0.5, n_c) / (rng.permutation(n_c) + 1.0) ** (cfg.popularity_skew * 0.25)
        src_ts = catalogue["upload_ts"].to_numpy().astype(np.float64)
        lo, hi = src_ts.min(), src_ts.max()
        span = T0 + cfg.days * D - history_start
        frac = (src_ts - lo) / max(hi - lo, 1.0)
        jitter = rng.integers(0, D, n_i)
        upload_ts = (history_start + frac * (span - D) + jitter).astype(np.int64)
        feats = {c: catalogue[c].to_numpy().astype(np.float32) for c in catalogue.column_names if c.startswith("f_")}

    item_topic = c_topic[item_creator_row]
    c_vec = unit(topics[c_topic] + 0.4 * rng.standard_normal((n_c, d))).astype(np.float32)
    c_log_quality = np.log(c_quality + 1e-6)
    item_vecs = around_creator(c_vec[item_creator_row], cfg.item_specific_share, rng)
    prior = _item_prior(cfg, rng, creator_ids, c_vec, c_log_quality, item_creator_row, item_vecs)
    item_quality = prior.quality(item_creator_row, rng)
    content = prior.content(item_vecs, rng)
    feats |= {name: content[:, j] for j, name in enumerate(prior.content_names)}

    names = list(RESPONSE_TYPES)
    truth = LatentFactorResponse(
        user_ids=user_ids,
        user_vecs=user_vecs,
        item_ids=item_ids,
        item_vecs=item_vecs,
        item_creators=item_creators,
        bias=_logit(np.array([BASE_RATES[e] for e in names])).astype(np.float32),
        scale=np.array([AFFINITY_SCALE[e] for e in names], np.float32),
        item_quality=item_quality,
        quality_scale=np.array([QUALITY_SCALE[e] for e in names], np.float32),
        user_bias=user_bias,
        item_prior=prior,
        item_content=content,
    )
    truth.bias = _calibrated_bias(truth, rng)

    events = _logged_events(cfg, rng, user_ids, visit_p, item_ids, upload_ts, truth)
    items = pa.table(
        {
            "item_id": item_ids,
            "creator_id": item_creators,
            "upload_ts": upload_ts,
            "category": np.asarray(category, np.int64),
            **feats,
        }
    )
    users = pa.table({"user_id": user_ids, "f_activity": act.astype(np.float32)})
    meta = {"source": "synthetic" if catalogue is None else "synthetic+catalogue", "n_topics": k,
            "item_topic": item_topic, "start_ts": T0, "pre_days": cfg.pre_days}
    return validate_log(Log(name="synthetic", events=events, items=items, users=users, truth=truth, meta=meta))


def first_occurrences(*columns: np.ndarray) -> np.ndarray:
    """The sorted indices of the first occurrence of each distinct row of ``columns`` (integer arrays of one
    length): what ``np.unique(np.stack(columns, 1), axis=0, return_index=True)`` gives, sorted. When the columns'
    ranges (each less its minimum) fit in 63 bits together, the rows are packed into one int64 key first: the
    row-wise unique sorted 24-byte records and took ~40 % of the synthetic world's generation."""
    shifted = [col.astype(np.int64) - col.min() for col in columns] if len(columns[0]) else []
    bits = [int(col.max()).bit_length() for col in shifted]
    if shifted and sum(bits) <= 63:
        key = np.zeros(len(columns[0]), np.int64)
        for col, width in zip(shifted, bits):
            key = (key << width) | col
        _, first = np.unique(key, return_index=True)
    else:
        _, first = np.unique(np.stack(columns, 1), axis=0, return_index=True)
    first.sort()
    return first


def _logged_events(cfg, rng, user_ids, visit_p, item_ids, upload_ts, truth) -> pa.Table:
    """History exposed by a popularity/recency logging policy on days -pre_days..days-1, responses drawn from ``truth``.

    Popularity: an item is drawn in proportion to its like rate at zero affinity and average propensity,
    ``sigmoid(bias_like + quality_scale_like * q_i)`` (bounded, so a heavy-tailed hit cannot take every slate).
    """
    order = np.argsort(upload_ts, kind="stable")
    s_items, s_ts = item_ids[order], upload_ts[order]
    like = RESPONSE_TYPES.index("like")
    w = _sigmoid(truth.bias[like] + truth.quality_scale[like] * truth.item_quality[truth.items.rows(s_items)])
    cum_w = np.concatenate([[0.0], np.cumsum(w)])
    S = cfg.slate_size
    cols: dict[str, list[np.ndarray]] = {"ts": [], "user_id": [], "item_id": [], "event": []}
    for day in range(-cfg.pre_days, cfg.days):
        weekday = (3 + day) % 7  # T0 is a Thursday
        boost = cfg.weekend_boost if weekday >= 5 else 1.0
        visiting = user_ids[rng.random(len(user_ids)) < np.clip(visit_p * boost, 0, 1)]
        n_req = 1 + rng.poisson(max(cfg.requests_per_visit - 1.0, 0.0), len(visiting))
        req_user = np.repeat(visiting, n_req)
        req_ts = T0 + day * SECONDS_PER_DAY + rng.integers(0, SECONDS_PER_DAY, len(req_user))
        hi = np.searchsorted(s_ts, req_ts, side="left")  # items uploaded strictly before the request
        lo = np.searchsorted(s_ts, req_ts - RECENT_WINDOW_S, side="left")
        ok = hi > 0
        req_user, req_ts, hi, lo = req_user[ok], req_ts[ok], hi[ok], lo[ok]
        n = len(req_user)
        # half the slate by quality-weighted popularity, half uniformly among recent uploads
        n_pop = (S + 1) // 2
        u = rng.random((n, n_pop)) * cum_w[hi][:, None]
        pop_pick = np.searchsorted(cum_w, u, side="right") - 1
        pop_pick = np.minimum(pop_pick, hi[:, None] - 1)
        span = np.maximum(hi - lo, 1)
        rec_pick = np.where(hi[:, None] > lo[:, None], lo[:, None] + (rng.random((n, S - n_pop)) * span[:, None]).astype(np.int64), pop_pick[:, :1])
        picks = np.concatenate([pop_pick, rec_pick], axis=1)
        e_user = np.repeat(req_user, S)
        e_ts = np.repeat(req_ts, S)
        e_item = s_items[picks.ravel()]
        first = first_occurrences(e_ts, e_user, e_item)
        e_user, e_ts, e_item = e_user[first], e_ts[first], e_item[first]
        resp = truth.sample(e_user, e_item, rng)  # (n, E)
        cols["ts"].append(e_ts)
        cols["user_id"].append(e_user)
        cols["item_id"].append(e_item)
        cols["event"].append(np.zeros(len(e_ts), np.int8))  # index into ("expose", *RESPONSE_TYPES)
        for j in range(len(RESPONSE_TYPES)):
            m = resp[:, j]
            cols["ts"].append(e_ts[m])
            cols["user_id"].append(e_user[m])
            cols["item_id"].append(e_item[m])
            cols["event"].append(np.full(int(m.sum()), j + 1, np.int8))
    return pa.table(
        {
            "ts": np.concatenate(cols["ts"]).astype(np.int64),
            "user_id": np.concatenate(cols["user_id"]).astype(np.int64),
            "item_id": np.concatenate(cols["item_id"]).astype(np.int64),
            # decoded from a dictionary: 30M Python strings took seconds and GBs at the large scale
            "event": pa.DictionaryArray.from_arrays(np.concatenate(cols["event"]),
                                                    ["expose", *RESPONSE_TYPES]).cast(pa.string()),
        }
    )
