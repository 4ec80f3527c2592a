"""The embedded synthetic platform: seeded users, creators, items and a logged history, with its ground truth.

Users have latent interests (a main and a secondary topic) and heterogeneous, weekly-patterned
activity; creators have a topic, a Zipf-tailed quality and a lognormal upload rate; items
inherit their creator's topic. The log is what a popularity/recency logging policy exposed,
with responses drawn from the ground-truth :class:`~simulator.response.LatentFactorResponse`,
which the log carries as ``truth`` so the world can use it as its oracle.

Optionally a real catalogue (``catalogue``: item_id, creator_id, upload_ts, category, f_*),
e.g. KuaiRand-Pure's video->author table, replaces the generated creators and items.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from simulator.config import SyntheticConfig
from simulator.response import LatentFactorResponse, _logit
from simulator.schema import RESPONSE_TYPES, SECONDS_PER_DAY, Log, validate_log

T0 = 1_767_225_600  # 2026-01-01 00:00:00 UTC, a Thursday
CATALOGUE_DAYS = 14  # items before day 0 are spread over this many days
BASE_RATES = {"like": 0.05, "comment": 0.01, "follow": 0.005, "share": 0.005, "view": 0.4}
AFFINITY_SCALE = {"like": 3.0, "comment": 2.5, "follow": 2.5, "share": 2.0, "view": 1.5}
QUALITY_SCALE = {"like": 0.6, "comment": 0.5, "follow": 0.6, "share": 0.5, "view": 0.4}
RECENT_WINDOW_S = 3 * SECONDS_PER_DAY


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True).clip(1e-9)


def generate_synthetic(
    cfg: SyntheticConfig,
    seed: int = 0,
    catalogue: pa.Table | None = None,
    user_activity: np.ndarray | None = None,
) -> Log:
    """Generate a validated synthetic :class:`Log` (events, items, users, truth) from ``cfg`` and ``seed``."""
    rng = np.random.default_rng([seed, 0x5EED])
    d, k = cfg.latent_dim, cfg.n_topics
    topics = _unit(rng.standard_normal((k, d))).astype(np.float32)
    topic_pop = 1.0 / np.arange(1, k + 1) ** 0.8
    topic_pop /= topic_pop.sum()

    # --- users: interests and activity
    n_u = cfg.n_users
    user_ids = np.arange(n_u, dtype=np.int64)
    t1 = rng.choice(k, n_u, p=topic_pop)
    t2 = rng.choice(k, n_u, p=topic_pop)
    user_vecs = _unit(topics[t1] + 0.5 * topics[t2] + 0.35 * rng.standard_normal((n_u, d)))
    if user_activity is not None:
        act = np.resize(np.asarray(user_activity, np.float64), n_u)
        act = act / max(act.mean(), 1e-9)
    else:
        act = rng.lognormal(0.0, 0.8, n_u)
        act /= act.mean()
    visit_p = np.clip(cfg.mean_daily_visit_prob * act, 0.01, 0.95)

    # --- creators and items
    if catalogue is None:
        n_c = cfg.n_creators
        creator_ids = np.arange(n_c, dtype=np.int64)
        c_topic = rng.choice(k, n_c, p=topic_pop)
        c_quality = rng.lognormal(0.0, 0.5, n_c) / (rng.permutation(n_c) + 1.0) ** (cfg.popularity_skew * 0.25)
        c_rate = rng.lognormal(0.0, 0.7, n_c)
        c_rate *= cfg.uploads_per_creator_day / c_rate.mean()
        n_cat = rng.poisson(cfg.catalogue_items_per_creator, n_c)
        n_run = rng.poisson(c_rate[:, None] * np.ones((1, cfg.days))).sum(1)
        n_items_c = n_cat + n_run
        item_creator_row = np.repeat(np.arange(n_c), n_items_c)
        n_i = len(item_creator_row)
        is_cat = np.concatenate([np.arange(m) < a for m, a in zip(n_items_c, n_cat)]) if n_i else np.zeros(0, bool)
        cat_ts = T0 - rng.integers(1, CATALOGUE_DAYS * SECONDS_PER_DAY, n_i)
        run_ts = T0 + rng.integers(0, cfg.days * SECONDS_PER_DAY, n_i)
        upload_ts = np.where(is_cat, cat_ts, run_ts).astype(np.int64)
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
        span = (CATALOGUE_DAYS + cfg.days) * SECONDS_PER_DAY
        frac = (src_ts - lo) / max(hi - lo, 1.0)
        jitter = rng.integers(0, SECONDS_PER_DAY, n_i)
        upload_ts = (T0 - CATALOGUE_DAYS * SECONDS_PER_DAY + frac * (span - SECONDS_PER_DAY) + jitter).astype(np.int64)
        feats = {c: catalogue[c].to_numpy().astype(np.float32) for c in catalogue.column_names if c.startswith("f_")}

    item_topic = c_topic[item_creator_row]
    c_vec = _unit(topics[c_topic] + 0.4 * rng.standard_normal((n_c, d)))
    item_vecs = _unit(c_vec[item_creator_row] + 0.3 * rng.standard_normal((n_i, d))).astype(np.float32)
    item_quality = np.log(c_quality[item_creator_row] + 1e-6) + 0.3 * rng.standard_normal(n_i)
    item_quality = (item_quality - item_quality.mean()) / max(item_quality.std(), 1e-6)

    names = list(RESPONSE_TYPES)
    truth = LatentFactorResponse(
        user_ids=user_ids,
        user_vecs=user_vecs,
        item_ids=item_ids,
        item_vecs=item_vecs,
        item_creators=item_creators,
        bias=np.array([_logit(BASE_RATES[e]) - AFFINITY_SCALE[e] * 0.15 for e in names], np.float32),
        scale=np.array([AFFINITY_SCALE[e] for e in names], np.float32),
        item_quality=item_quality.astype(np.float32),
        quality_scale=np.array([QUALITY_SCALE[e] for e in names], np.float32),
    )

    events = _logged_events(cfg, rng, user_ids, visit_p, item_ids, upload_ts, item_quality, truth)
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
            "item_topic": item_topic}
    return validate_log(Log(name="synthetic", events=events, items=items, users=users, truth=truth, meta=meta))


def _logged_events(cfg, rng, user_ids, visit_p, item_ids, upload_ts, item_quality, truth) -> pa.Table:
    """History exposed by a popularity/recency logging policy, responses drawn from ``truth``."""
    order = np.argsort(upload_ts, kind="stable")
    s_items, s_ts = item_ids[order], upload_ts[order]
    w = np.exp(item_quality[order])
    cum_w = np.concatenate([[0.0], np.cumsum(w)])
    S = cfg.slate_size
    cols: dict[str, list[np.ndarray]] = {"ts": [], "user_id": [], "item_id": [], "event": []}
    for day in range(cfg.days):
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
        key = np.stack([e_ts, e_user, e_item], 1)
        _, first = np.unique(key, axis=0, return_index=True)
        first.sort()
        e_user, e_ts, e_item = e_user[first], e_ts[first], e_item[first]
        resp = truth.sample(e_user, e_item, rng)  # (n, E)
        cols["ts"].append(e_ts)
        cols["user_id"].append(e_user)
        cols["item_id"].append(e_item)
        cols["event"].append(np.full(len(e_ts), "expose", dtype=object))
        for j, ev in enumerate(RESPONSE_TYPES):
            m = resp[:, j]
            cols["ts"].append(e_ts[m])
            cols["user_id"].append(e_user[m])
            cols["item_id"].append(e_item[m])
            cols["event"].append(np.full(int(m.sum()), ev, dtype=object))
    return pa.table(
        {
            "ts": np.concatenate(cols["ts"]).astype(np.int64),
            "user_id": np.concatenate(cols["user_id"]).astype(np.int64),
            "item_id": np.concatenate(cols["item_id"]).astype(np.int64),
            "event": pa.array(np.concatenate(cols["event"]), pa.string()),
        }
    )
