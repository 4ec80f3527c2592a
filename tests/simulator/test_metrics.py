"""Tests of the simulator.metrics package: each metric on a hand-built arm, then the bootstrap lifts."""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from simulator.core.config import MetricsConfig
from simulator.metrics import bootstrap
from simulator.metrics.bootstrap import derived_k, replicate_k, replicate_reach
from simulator.metrics.comparison import compare_arms, ladder_comparison
from simulator.metrics.cuped import cuped_theta
from simulator.metrics.daily import LiveDaily, daily_metrics, early_exposure, exposures_by_age, overall_metrics
from simulator.metrics.definitions import ArmData, expo_metric_name, expo_thresholds, metric_names
from simulator.metrics.expo_reach import item_window_exposures, resolve_expo_k
from simulator.metrics.units import TWO_WAY_METRICS, normalised_metrics
from simulator.core.schema import EXPOSURES_SCHEMA, SECONDS_PER_DAY, UPLOADS_SCHEMA, VISITS_SCHEMA

H = 3600
D = SECONDS_PER_DAY
T0 = 20_000 * D  # a midnight
CFG = MetricsConfig(expo_k=[2, 3], cold_age_hours=2, cold_max_exposures=2, bootstrap_samples=200)
OLD = T0 - 10 * D  # upload time of a catalogue item (before the run)


def _frame(rows: list[dict], schema, defaults: dict) -> pl.DataFrame:
    full = [{**defaults, **r} for r in rows]
    empty = pl.from_arrow(schema.empty_table())
    return pl.DataFrame(full, schema=empty.schema) if full else empty


def expo(ts: int, user: int, item: int, upload_ts: int, creator: int = 1, position: int = 0, **flags) -> dict:
    """One exposure row; ``day`` is derived from ``ts``."""
    return {
        "day": (ts - T0) // D, "ts": ts, "user_id": user, "item_id": item, "creator_id": creator,
        "upload_ts": upload_ts, "position": position, **flags,
    }


def upload(item: int, creator: int, ts: int) -> dict:
    return {"day": (ts - T0) // D, "item_id": item, "creator_id": creator, "upload_ts": ts}


def arm(
    exposures=(), uploads=(), visits=(), creators=(1, 2, 3), users=tuple(range(1, 10)), name="a", share=0.5
) -> ArmData:
    flags = dict.fromkeys(("like", "comment", "follow", "share", "view"), False)
    return ArmData(
        name=name,
        exposures=_frame(list(exposures), EXPOSURES_SCHEMA, {"tick": 0, "channel": "two_tower", **flags}),
        uploads=_frame(list(uploads), UPLOADS_SCHEMA, {"category": 0, "origin": "replay"}),
        visits=_frame(list(visits), VISITS_SCHEMA, {"requests": 1}),
        creators=np.array(creators),
        users=np.array(users),
        share=share,
    )


# --------------------------------------------------------------------------- shape


def test_daily_frame_has_one_row_per_day_and_zeros_when_nothing_happened():
    d = daily_metrics(arm(), CFG, T0, days=4)
    assert d.columns == ["day", *metric_names(CFG)]
    assert d["day"].to_list() == [0, 1, 2, 3]
    assert all(d[c].sum() == 0 for c in metric_names(CFG))
    assert set(overall_metrics(arm(), CFG, T0, 4).values()) == {0.0}


def test_metric_names():
    assert metric_names(CFG) == [
        "expo_reach_2", "expo_reach_3", "dac", "publications", "cold_interactions", "new_item_coverage",
        "exposures", "interactions", "interactions_per_exposure", "share_rate", "view_rate", "dau", "engaged_users",
    ]


# --------------------------------------------------------------------------- creator side


def test_expo_reach_counts_run_items_crossing_k_on_different_days():
    a10, a11, a12 = T0 + 1 * H, T0 + 2 * H, T0 + D + 1 * H
    ups = [upload(10, 1, a10), upload(11, 1, a11), upload(12, 2, a12)]
    ex = [
        # item 10: 2 exposures on day 0 (reaches K=2 on day 0), a 3rd on day 1 (K=3 on day 1)
        expo(T0 + 3 * H, 1, 10, a10), expo(T0 + 4 * H, 2, 10, a10), expo(T0 + D + 5 * H, 3, 10, a10),
        # item 11: one on day 0, one on day 2 (K=2 on day 2), never 3
        expo(T0 + 5 * H, 1, 11, a11), expo(T0 + 2 * D + 1 * H, 2, 11, a11),
        # item 12 (uploaded day 1): 3 exposures on day 1 (K=2 and K=3 on day 1)
        expo(T0 + D + 2 * H, 1, 12, a12, creator=2), expo(T0 + D + 3 * H, 2, 12, a12, creator=2),
        expo(T0 + D + 4 * H, 3, 12, a12, creator=2),
        # item 99 is a catalogue item (not uploaded in the run): never counted, however exposed
        *[expo(T0 + h * H, 4, 99, OLD, creator=2) for h in range(1, 6)],
    ]
    # a 5-day run sees the whole 3-day window of every item (item 12's ends at day 4, 1 h); all exposures are in it
    d = daily_metrics(arm(ex, ups), CFG, T0, days=5)
    # reach-2: day 0 {10}; day 1 {10, 12}; day 2 {10, 12, 11}
    assert d["expo_reach_2"].to_list() == [1, 2, 3, 3, 3]
    # reach-3: day 0 {}; day 1 {10, 12}; day 2 unchanged
    assert d["expo_reach_3"].to_list() == [0, 2, 2, 2, 2]
    o = overall_metrics(arm(ex, ups), CFG, T0, days=5)
    assert (o["expo_reach_2"], o["expo_reach_3"]) == (3.0, 2.0)
    # cut after day 3 (days=4): item 12's window is not over at the end of the run -> censored on every day
    cut = daily_metrics(arm(ex, ups), CFG, T0, days=4)
    assert cut["expo_reach_2"].to_list() == [1, 1, 2, 2] and cut["expo_reach_3"].to_list() == [0, 1, 1, 1]


def test_expo_reach_window_and_censoring():
    # 3-day window (the default), 4-day run ending at T0 + 4 D
    a20, a21, a22 = T0 + 1 * H, T0 + D, T0 + D + 1  # 21's window ends exactly at the end of the run; 22's 1 s later
    ups = [upload(20, 1, a20), upload(21, 2, a21), upload(22, 3, a22)]
    ex = [
        # item 20: 2 exposures in its window; the 3rd comes 3 D + 1 h after upload, outside it
        expo(T0 + 2 * H, 1, 20, a20), expo(T0 + D, 2, 20, a20), expo(T0 + 3 * D + 2 * H, 3, 20, a20),
        # item 21: 3 exposures on day 1
        *[expo(T0 + D + h * H, u, 21, a21, creator=2) for u, h in ((1, 1), (2, 2), (3, 3))],
        # item 22: too young at the end of the run, not counted however exposed
        *[expo(T0 + D + h * H, h, 22, a22, creator=3) for h in range(1, 6)],
    ]
    a = arm(ex, ups)
    assert sorted(item_window_exposures(a, CFG, T0, 4)) == [2, 3]  # 22 excluded
    d = daily_metrics(a, CFG, T0, days=4)
    assert d["expo_reach_2"].to_list() == [0, 2, 2, 2]  # 20 reaches 2 on day 1 (its 2nd exposure), 21 on day 1
    assert d["expo_reach_3"].to_list() == [0, 1, 1, 1]  # only 21: 20's 3rd exposure is outside the window
    # a wider window sees 20's 3rd exposure, and censors 21 (its window now ends after the run)
    wide = CFG.model_copy(update={"expo_window_days": 3.5})
    assert daily_metrics(a, wide, T0, days=4)["expo_reach_3"].to_list() == [0, 0, 0, 1]
    # publications and coverage still count every run item, censored or not
    o = overall_metrics(a, CFG, T0, days=4)
    assert (o["publications"], o["new_item_coverage"]) == (3.0, 1.0)


def _window_arm() -> ArmData:
    """Five items uploaded at T0 + 1 h with 0, 1, 2, 3 and 10 exposures in their 3-day window, one more exposure
    of the 3-exposure item outside it, and an item uploaded on day 2 (censored in a 4-day run) with 50."""
    counts = {30: 0, 31: 1, 32: 2, 33: 3, 34: 10}
    up_ts = T0 + H
    ups = [upload(i, 1 + i % 3, up_ts) for i in counts] + [upload(35, 1, T0 + 2 * D)]
    ex = [
        expo(T0 + 2 * H + j * 60, j % 9 + 1, i, up_ts, creator=1 + i % 3) for i, n in counts.items() for j in range(n)
    ]
    ex.append(expo(T0 + 3 * D + 2 * H, 5, 33, up_ts, creator=1))
    ex += [expo(T0 + 2 * D + H + j, j % 9 + 1, 35, T0 + 2 * D) for j in range(50)]
    return arm(ex, ups)


def test_derived_k_are_quantiles_of_the_control_window_exposures():
    a = _window_arm()
    assert sorted(item_window_exposures(a, CFG, T0, 4)) == [0, 1, 2, 3, 10]
    derived = MetricsConfig(cold_age_hours=2, cold_max_exposures=2, bootstrap_samples=200)  # expo_k=None
    # np.quantile([0, 1, 2, 3, 10]): q50 = 2; q90 = 3 + 0.6 * 7 = 7.2 -> 8; q99 = 3 + 0.96 * 7 = 9.72 -> 10
    res = resolve_expo_k(a, derived, T0, 4)
    assert expo_thresholds(res) == {"expo_reach_q50": 2, "expo_reach_q90": 8, "expo_reach_q99": 10}
    assert metric_names(res)[:4] == ["expo_reach_q50", "expo_reach_q90", "expo_reach_q99", "dac"]
    o = overall_metrics(a, res, T0, 4)
    assert (o["expo_reach_q50"], o["expo_reach_q90"], o["expo_reach_q99"]) == (3.0, 1.0, 1.0)  # {32, 33, 34}, {34}
    # the caller's floor (DualRec's target count + 1), unless the config sets its own
    floored = resolve_expo_k(a, derived, T0, 4, k_min=5)
    assert list(expo_thresholds(floored).values()) == [5, 8, 10]
    own = derived.model_copy(update={"expo_k_min": 9})
    assert list(expo_thresholds(resolve_expo_k(a, own, T0, 4, k_min=5)).values()) == [9, 9, 10]
    # no eligible item at all (a 2-day run is shorter than the window): every K is the floor, and at least 1
    assert set(expo_thresholds(resolve_expo_k(a, derived, T0, 2)).values()) == {1}
    # a fixed expo_k is already resolved
    assert resolve_expo_k(a, CFG, T0, 4) is CFG


def test_derived_metric_names_and_unresolved_configs():
    assert [expo_metric_name(q) for q in (0.5, 0.9, 0.99, 0.995, 0.07)] == [
        "expo_reach_q50", "expo_reach_q90", "expo_reach_q99", "expo_reach_q99.5", "expo_reach_q7"]
    unresolved = MetricsConfig()
    assert unresolved.expo_k is None and unresolved.expo_window_days == 3.0
    for call in (
        lambda: metric_names(unresolved),
        lambda: daily_metrics(arm(), unresolved, T0, 2),
        lambda: overall_metrics(arm(), unresolved, T0, 2),
        lambda: normalised_metrics(arm(), unresolved, T0, 2),
        lambda: compare_arms({"c": arm(), "t": arm()}, "c", unresolved, T0, 2, seed=0),
    ):
        with pytest.raises(ValueError, match="resolve_expo_k"):
            call()
    with pytest.raises(ValueError):
        MetricsConfig(expo_k=[5, 5])
    with pytest.raises(ValueError):
        MetricsConfig(expo_quantiles=[0.0])


def test_dac_and_publications():
    ups = [
        upload(10, 1, T0 + 1 * H), upload(11, 1, T0 + 9 * H), upload(12, 2, T0 + 5 * H),  # day 0: creators {1, 2}
        upload(13, 1, T0 + D + 1 * H),  # day 1: creator {1}
        upload(14, 3, T0 + 3 * D + 1 * H),  # day 3: after a 3-day run, ignored
    ]
    d = daily_metrics(arm(uploads=ups), CFG, T0, days=3)
    assert d["dac"].to_list() == [2, 1, 0]
    assert d["publications"].to_list() == [3, 1, 0]
    o = overall_metrics(arm(uploads=ups), CFG, T0, days=3)
    assert o["dac"] == pytest.approx((2 + 1 + 0) / 3)
    assert o["publications"] == 4.0


def test_cold_interactions_age_rule_and_prior_exposure_rule():
    # cold = younger than 2 h OR fewer than 2 prior exposures (CFG); A is old, B is uploaded at T0
    A, B = 1, 2
    ex = [
        # A (old item): cold only through the prior-exposure rule
        expo(T0 + 1 * H, 5, A, OLD, like=True),  # prior 0 -> cold: 1
        expo(T0 + 2 * H, 6, A, OLD, like=True, follow=True),  # same ts as the next row but user 6 > 5: prior 2 -> warm: 0
        expo(T0 + 2 * H, 5, A, OLD, like=True, comment=True),  # prior 1 -> cold: 2
        expo(T0 + D, 7, A, OLD, like=True),  # day 1, prior 3 -> warm: 0
        # B (new item): prior rule for the first two, then the age rule (< 2 h) for the third
        expo(T0 + 1 * H, 1, B, T0, like=True, share=True, view=True),  # prior 0, age 1 h -> cold: 1 (share/view don't count)
        expo(T0 + 1 * H, 2, B, T0, comment=True),  # prior 1 -> cold: 1
        expo(T0 + 1 * H, 3, B, T0, follow=True),  # prior 2 but age 1 h -> cold: 1
        expo(T0 + 3 * H, 4, B, T0, like=True),  # prior 3, age 3 h -> warm: 0
    ]
    d = daily_metrics(arm(ex), CFG, T0, days=2)
    # day 0: 1 + 2 + 1 + 1 + 1 = 6; day 1: 0
    assert d["cold_interactions"].to_list() == [6, 0]
    # all interactions on day 0: 1 + 2 + 2 + 1 + 1 + 1 + 1 = 9
    assert d["interactions"].to_list() == [9, 1]
    # with cold_max_exposures=1 only each item's first exposure is cold by the prior rule:
    age_only = CFG.model_copy(update={"cold_max_exposures": 1})
    # prior 0 rows are still cold: A@1h (1), B@1h user1 (1); plus age < 2h: B users 2, 3 (1 + 1) -> 4
    assert daily_metrics(arm(ex), age_only, T0, days=2)["cold_interactions"].to_list() == [4, 0]


def test_new_item_coverage():
    a = [T0 + 1 * H, T0 + 2 * H, T0 + D + 1 * H, T0 + 2 * D + 1 * H]
    ups = [upload(10, 1, a[0]), upload(11, 1, a[1]), upload(12, 2, a[2]), upload(13, 2, a[3])]
    ex = [
        expo(T0 + 5 * H, 1, 10, a[0]), expo(T0 + 6 * H, 2, 10, a[0]),  # item 10 first exposed day 0
        expo(T0 + D + 5 * H, 1, 11, a[1]),  # item 11 first exposed day 1
        expo(T0 + 2 * D + 5 * H, 1, 12, a[2], creator=2),  # item 12 first exposed day 2; item 13 never
        expo(T0 + 2 * D + 5 * H, 3, 99, OLD),  # catalogue item: not in the denominator
    ]
    d = daily_metrics(arm(ex, ups), CFG, T0, days=3)
    # day 0: {10} of {10, 11} = 1/2; day 1: {10, 11} of {10, 11, 12} = 2/3; day 2: 3 of 4
    assert d["new_item_coverage"].to_list() == pytest.approx([1 / 2, 2 / 3, 3 / 4])
    assert overall_metrics(arm(ex, ups), CFG, T0, days=3)["new_item_coverage"] == pytest.approx(0.75)
    # nothing uploaded yet on day 0 -> 0
    late = daily_metrics(arm(ex[3:4], ups[2:3]), CFG, T0, days=3)  # only item 12
    assert late["new_item_coverage"].to_list() == [0.0, 0.0, 1.0]


# --------------------------------------------------------------------------- user side


def _guardrail_arm() -> ArmData:
    visits = [
        {"day": 0, "user_id": 1}, {"day": 0, "user_id": 2}, {"day": 0, "user_id": 3},
        {"day": 0, "user_id": 4, "requests": 0},  # a row without requests is not a visit
        {"day": 1, "user_id": 2},
    ]
    ex = [
        expo(T0 + 1 * H, 1, 50, OLD, like=True, comment=True),  # user 1 engaged on day 0
        expo(T0 + 1 * H, 1, 51, OLD, position=1),
        expo(T0 + 2 * H, 2, 50, OLD, view=True, share=True),  # user 2: views and shares are not interactions
        expo(T0 + 2 * H, 2, 52, OLD, position=1, view=True),
        expo(T0 + D + 1 * H, 2, 51, OLD, follow=True),  # user 2 engaged on day 1
    ]
    return arm(ex, visits=visits)


def test_guardrails_daily_and_overall():
    d = daily_metrics(_guardrail_arm(), CFG, T0, days=3)
    assert d["exposures"].to_list() == [4, 1, 0]
    assert d["interactions"].to_list() == [2, 1, 0]  # like + comment; follow
    assert d["interactions_per_exposure"].to_list() == pytest.approx([2 / 4, 1.0, 0.0])
    assert d["share_rate"].to_list() == pytest.approx([1 / 4, 0.0, 0.0])
    assert d["view_rate"].to_list() == pytest.approx([2 / 4, 0.0, 0.0])
    o = overall_metrics(_guardrail_arm(), CFG, T0, days=3)
    assert o["exposures"] == 5 and o["interactions"] == 3
    assert o["interactions_per_exposure"] == pytest.approx(3 / 5)  # ratio of totals, not mean of daily rates
    assert o["share_rate"] == pytest.approx(1 / 5)
    assert o["view_rate"] == pytest.approx(2 / 5)


def test_dau_vs_engaged_users():
    d = daily_metrics(_guardrail_arm(), CFG, T0, days=3)
    # day 0: visitors {1, 2, 3} (user 4 had 0 requests), engaged {1}; day 1: visitors {2}, engaged {2}
    assert d["dau"].to_list() == [3, 1, 0]
    assert d["engaged_users"].to_list() == [1, 1, 0]
    o = overall_metrics(_guardrail_arm(), CFG, T0, days=3)
    assert o["dau"] == pytest.approx(4 / 3) and o["engaged_users"] == pytest.approx(2 / 3)


def test_exposures_by_age():
    ex = [
        expo(T0 + 1 * H // 2, 1, 1, T0),  # 0.5 h
        expo(T0 + 3 * H, 1, 1, T0, like=True),  # 3 h
        expo(T0 + 5 * H, 2, 1, T0),  # 5 h
        expo(T0 + 1 * H, 1, 2, OLD),  # 10 days + 1 h
        expo(T0 - 1 * H, 1, 2, OLD),  # before the run: ignored
    ]
    t = exposures_by_age(arm(ex), T0, bins_hours=(1, 6, 24))
    assert t["age_bin"].to_list() == ["0-1h", "1-6h", "6-24h", ">=24h"]
    assert t["exposures"].to_list() == [1, 2, 0, 1]
    assert t["interactions"].to_list() == [0, 1, 0, 0]
    assert t["share"].to_list() == pytest.approx([0.25, 0.5, 0.0, 0.25])


def test_early_exposure_profile_by_hand():
    ups = [upload(10, 1, T0 + H), upload(11, 1, T0 + 2 * H), upload(12, 2, T0 + 3 * H), upload(13, 2, T0 + 2 * D)]
    ex = [expo(T0 + 2 * H, u, 10, T0 + H) for u in (1, 2, 3)]  # item 10: 3 exposures in its first day
    ex += [expo(T0 + D + 3 * H, 1, 11, T0 + 2 * H)]  # item 11: one, 25 h after upload: too late
    ex += [expo(T0 + 4 * H, 4, 12, T0 + 3 * H)]  # item 12: one
    ex += [expo(T0 + 2 * D + H, 1, 13, T0 + 2 * D)]  # item 13: uploaded as the 2-day run ends
    e = early_exposure(arm(ex, ups), T0, days=2)
    # judged: items 10, 11, 12 with early exposures [3, 0, 1]; item 13 is censored (its day ends after the run)
    assert e["early.items"] == 3
    assert e["early.coverage"] == pytest.approx(2 / 3)
    assert e["early.expo_q50"] == 1 and e["early.expo_q90"] == pytest.approx(2.6)
    assert e["early.top10_share"] == pytest.approx(3 / 4)  # the top item (10) got 3 of the 4


# --------------------------------------------------------------------------- normalisation and bootstrap


def test_normalised_values_divide_by_bucket_sizes():
    ups = [upload(10, 1, T0 + H), upload(11, 2, T0 + D + H)]
    a = arm(_guardrail_arm().exposures.to_dicts(), ups, _guardrail_arm().visits.to_dicts(), creators=(1, 2, 3, 4))
    o = overall_metrics(a, CFG, T0, days=3)
    n = normalised_metrics(a, CFG, T0, days=3)
    for name in ("dac", "publications", "cold_interactions", "expo_reach_2"):
        assert n[name] == pytest.approx(o[name] / 4)  # per bucket creator
    for name in ("exposures", "interactions", "dau", "engaged_users"):
        assert n[name] == pytest.approx(o[name] / 9)  # per bucket user
    for name in ("interactions_per_exposure", "share_rate", "view_rate", "new_item_coverage"):
        assert n[name] == pytest.approx(o[name])  # ratios of sums are share-free already


def test_data_outside_the_bucket_is_an_error():
    leaky = arm([expo(T0 + H, 99, 1, OLD)], users=(1, 2))
    with pytest.raises(ValueError, match="user_id"):
        compare_arms({"c": leaky, "t": leaky}, "c", CFG, T0, 1, seed=0)


def synthetic_arm(
    name: str,
    n_creators: int,
    n_users: int,
    *,
    seed: int,
    offset: int,
    days: int = 7,
    pub_rate: float = 1.0,
    like_p: float = 0.05,
    visit_p: float = 0.5,
    exposures_per_visit: int = 6,
) -> ArmData:
    """A random arm: Poisson uploads per creator-day (first half of each day), visits, then
    exposures of already-uploaded items (second half of the day) with Bernoulli responses."""
    rng = np.random.default_rng(seed)
    creators = offset + np.arange(n_creators, dtype=np.int64)
    users = offset + np.arange(n_users, dtype=np.int64)
    n_up = rng.poisson(pub_rate, size=(days, n_creators))
    up_day = np.repeat(np.arange(days), n_up.sum(1))
    up_creator = np.concatenate([np.repeat(creators, n_up[d]) for d in range(days)])
    up_ts = T0 + up_day * D + rng.integers(0, D // 2, up_day.size)
    items = offset * 100 + np.arange(up_day.size, dtype=np.int64)
    visit = rng.random((days, n_users)) < visit_p
    v_day, v_user = np.nonzero(visit)
    visits = pl.DataFrame(
        {"day": v_day.astype(np.int32), "user_id": users[v_user], "requests": np.ones(v_day.size, np.int32)}
    )
    e_day = np.repeat(v_day, exposures_per_visit)
    e_user = np.repeat(users[v_user], exposures_per_visit)
    n = e_day.size
    available = np.searchsorted(up_day, e_day, side="right")  # items uploaded up to that day
    pick = (rng.random(n) * available).astype(np.int64)
    ts = T0 + e_day * D + D // 2 + rng.integers(0, D // 2, n)
    exposures = pl.DataFrame(
        {
            "day": e_day.astype(np.int32), "tick": np.zeros(n, np.int32), "ts": ts, "user_id": e_user,
            "item_id": items[pick], "creator_id": up_creator[pick], "upload_ts": up_ts[pick],
            "position": np.tile(np.arange(exposures_per_visit, dtype=np.int16), n // exposures_per_visit),
            "channel": np.full(n, "two_tower"), "like": rng.random(n) < like_p, "comment": rng.random(n) < 0.01,
            "follow": rng.random(n) < 0.005, "share": rng.random(n) < 0.01, "view": rng.random(n) < 0.4,
        }
    )
    uploads = pl.DataFrame(
        {
            "day": up_day.astype(np.int32), "item_id": items, "creator_id": up_creator, "upload_ts": up_ts,
            "category": np.zeros(items.size, np.int64), "origin": np.full(items.size, "replay"),
        }
    )
    return ArmData(name, exposures, uploads, visits, creators, users, share=n_creators / 10_000)


BOOT_CFG = MetricsConfig(expo_k=[5, 20], cold_age_hours=24, cold_max_exposures=20, bootstrap_samples=300)


def _row(table: pl.DataFrame, metric: str, arm_name: str = "t") -> dict:
    return table.filter((pl.col("metric") == metric) & (pl.col("arm") == arm_name)).row(0, named=True)


def test_ci_contains_a_known_lift():
    arms = {
        "c": synthetic_arm("c", 1000, 2000, seed=1, offset=0, pub_rate=1.0, like_p=0.05),
        "t": synthetic_arm("t", 1000, 2000, seed=2, offset=10**6, pub_rate=1.25, like_p=0.06),
    }
    res = compare_arms(arms, "c", BOOT_CFG, T0, 7, seed=0)
    pubs = _row(res, "publications")  # true lift 0.25
    assert pubs["ci_low"] < 0.25 < pubs["ci_high"] and pubs["ci_low"] > 0
    assert pubs["lift"] == pytest.approx(pubs["arm_value"] / pubs["control_value"] - 1)
    likes = _row(res, "interactions_per_exposure")  # true lift (0.06+0.015)/(0.05+0.015) - 1
    true = (0.06 + 0.015) / (0.05 + 0.015) - 1  # ~ 0.154
    assert likes["ci_low"] < true < likes["ci_high"] and likes["ci_low"] > 0


def test_identical_arms_give_zero_lift_and_cis_around_zero():
    a = synthetic_arm("c", 500, 1000, seed=3, offset=0)
    res = compare_arms({"c": a, "t": a}, "c", BOOT_CFG, T0, 7, seed=0)
    assert res.height == len(metric_names(BOOT_CFG))
    for r in res.iter_rows(named=True):
        assert r["lift"] == 0.0, r
        assert r["ci_low"] < 0 < r["ci_high"], r


def test_same_behaviour_at_half_the_share_has_no_lift():
    big = synthetic_arm("c", 2000, 4000, seed=4, offset=0)
    half = synthetic_arm("t", 1000, 2000, seed=5, offset=10**6)
    raw_big, raw_half = (overall_metrics(a, BOOT_CFG, T0, 7) for a in (big, half))
    assert raw_half["publications"] / raw_big["publications"] - 1 == pytest.approx(-0.5, abs=0.05)  # raw totals halve
    res = compare_arms({"c": big, "t": half}, "c", BOOT_CFG, T0, 7, seed=0)
    for r in res.iter_rows(named=True):
        # normalised lifts are noise: small, and well inside the sampling spread of the lift
        assert abs(r["lift"]) < max(0.05, r["ci_high"] - r["ci_low"]), r
        if not r["metric"].startswith("expo_reach"):  # tail counts: see docs/metrics.md on traffic noise
            assert abs(r["lift"]) < 0.05, r


def test_bootstrap_is_deterministic_and_independent_of_chunking(monkeypatch):
    arms = {
        "c": synthetic_arm("c", 300, 600, seed=6, offset=0),
        "t": synthetic_arm("t", 300, 600, seed=7, offset=10**6, like_p=0.07),
        "u": synthetic_arm("u", 150, 300, seed=8, offset=2 * 10**6),
    }
    first = compare_arms(arms, "c", BOOT_CFG, T0, 7, seed=11)
    assert first.equals(compare_arms(arms, "c", BOOT_CFG, T0, 7, seed=11))
    assert first["arm"].unique(maintain_order=True).to_list() == ["t", "u"]
    monkeypatch.setattr(bootstrap, "_BOOTSTRAP_CHUNK_BYTES", 8 * 600 * 7)  # a few replicates per chunk
    chunked = compare_arms(arms, "c", BOOT_CFG, T0, 7, seed=11)  # same weights; sums may differ in the last bit
    for col in ("ci_low", "ci_high"):
        assert np.allclose(first[col].to_numpy(), chunked[col].to_numpy(), rtol=1e-12, atol=0, equal_nan=True)
    other = compare_arms(arms, "c", BOOT_CFG, T0, 7, seed=12)
    assert not np.allclose(first["ci_low"].to_numpy(), other["ci_low"].to_numpy(), equal_nan=True)
    assert first["lift"].equals(other["lift"])


def test_zero_control_gives_nan_lift():
    res = compare_arms({"c": arm(), "t": arm()}, "c", CFG, T0, 2, seed=0)
    assert all(math.isnan(v) for v in res["lift"])


# --------------------------------------------------------------------------- docs run


def test_docs_snippets_run():
    doc = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"
    blocks = re.findall(r"```python\n(.*?)```", doc.read_text(), flags=re.S)
    assert blocks
    for code in blocks:
        exec(compile(code, str(doc), "exec"), {})


def test_ladder_compares_each_arm_with_the_one_before_it():
    arms = {
        "a": synthetic_arm("a", 300, 600, seed=11, offset=0, pub_rate=1.0),
        "b": synthetic_arm("b", 300, 600, seed=12, offset=10**6, pub_rate=1.2),
        "c": synthetic_arm("c", 300, 600, seed=13, offset=2 * 10**6, pub_rate=1.2 * 1.1),
    }
    lad = ladder_comparison(arms, ["a", "b", "c"], BOOT_CFG, T0, 7, seed=0)
    assert lad["arm"].unique(maintain_order=True).to_list() == ["b", "c"]
    b, c = (lad.filter((pl.col("arm") == x) & (pl.col("metric") == "publications")).row(0, named=True) for x in "bc")
    assert b["baseline"] == "a" and c["baseline"] == "b"
    # each step is the pairwise comparison: c's lift is over b, not over a
    assert c["lift"] == pytest.approx(c["arm_value"] / b["arm_value"] - 1)
    pair = compare_arms({"b": arms["b"], "c": arms["c"]}, "b", BOOT_CFG, T0, 7, seed=0)
    assert c["ci_low"] == _row(pair, "publications", "c")["ci_low"]
    with pytest.raises(ValueError, match="ladder arms"):
        ladder_comparison(arms, ["a", "zz"], BOOT_CFG, T0, 7, seed=0)


# --------------------------------------------------------------------------- undefined lifts, CUPED, two-way bootstrap


def _with_covariates(a: ArmData, covariates) -> ArmData:
    cov = np.asarray(covariates, dtype=np.float64).reshape(len(a.creators), -1)
    return dataclasses.replace(a, creator_covariates=cov)


def test_undefined_lifts_are_nan_and_not_significant():
    # publications: control 2 per creator, treatment 0 -> a -100% lift is undefined, not significant
    pubs = [upload(10, 1, T0 + H), upload(11, 2, T0 + H), upload(12, 3, T0 + 2 * H), upload(13, 3, T0 + 3 * H)]
    c, t = arm(uploads=pubs + [upload(14, 1, T0 + 4 * H), upload(15, 2, T0 + 4 * H)]), arm(name="t")
    r = _row(compare_arms({"c": c, "t": t}, "c", CFG, T0, 1, seed=0), "publications")
    assert r["control_value"] == 2.0 and r["arm_value"] == 0.0
    assert all(math.isnan(r[k]) for k in ("lift", "ci_low", "ci_high", "lift_cuped")), r
    assert not r["significant"] and not r["significant_cuped"]
    # new-item coverage with a single publishing creator per arm: a replicate is undefined whenever either
    # arm's creator draws weight 0, about 1 - (1 - e^-1)^2 = 60% of them -> undefined although both values exist
    two_items = [upload(10, 1, T0 + H), upload(11, 1, T0 + H)]
    one_c = arm([expo(T0 + 2 * H, 1, 10, T0 + H)], two_items)
    one_t = arm([expo(T0 + 2 * H, 1, 10, T0 + H), expo(T0 + 2 * H, 1, 11, T0 + H)], two_items)
    r = _row(compare_arms({"c": one_c, "t": one_t}, "c", CFG, T0, 1, seed=0), "new_item_coverage")
    assert (r["control_value"], r["arm_value"]) == (0.5, 1.0)
    assert math.isnan(r["lift"]) and math.isnan(r["ci_low"]) and not r["significant"]


def test_degenerate_bootstrap_gives_nan_lift():
    # every creator of both arms uploads once on day 0: DAC is 1 per creator in every replicate
    c = arm(uploads=[upload(10 + i, i, T0 + H) for i in (1, 2, 3)])
    t = arm(uploads=[upload(20 + i, i, T0 + H) for i in (1, 2, 3)], name="t")
    res = compare_arms({"c": c, "t": t}, "c", CFG, T0, 1, seed=0)
    dac = _row(res, "dac")
    assert (dac["control_value"], dac["arm_value"]) == (1.0, 1.0)
    assert math.isnan(dac["lift"]) and math.isnan(dac["ci_high"]) and not dac["significant"]


def test_cuped_lift_by_hand():
    # covariate x (say, uploads the log schedules), outcome y = publications per creator
    # control creators 1, 2: x = 0, 2; y = 1, 4. treatment creators 3, 4: x = 1, 3; y = 2, 4
    ups_c = [upload(10, 1, T0 + H), *[upload(11 + j, 2, T0 + H + j) for j in range(4)]]
    ups_t = [upload(20 + j, 3, T0 + H + j) for j in range(2)] + [upload(30 + j, 4, T0 + H + j) for j in range(4)]
    c = _with_covariates(arm(uploads=ups_c, creators=(1, 2)), [0, 2])
    t = _with_covariates(arm(uploads=ups_t, creators=(3, 4), name="t"), [1, 3])
    # pooled: x mean 1.5, y mean 2.75; sum((x - 1.5)(y - 2.75)) = 5.5, sum((x - 1.5)^2) = 5 -> theta = 1.1
    theta = cuped_theta(np.array([[0.0], [2], [1], [3]]), np.array([[1.0], [4], [2], [4]]))
    assert theta.item() == pytest.approx(1.1)
    # adjusted y - 1.1 (x - 1.5): control 2.65, 3.45 (mean 3.05); treatment 2.55, 2.35 (mean 2.45)
    r = _row(compare_arms({"c": c, "t": t}, "c", CFG, T0, 1, seed=0), "publications")
    assert r["lift"] == pytest.approx(3.0 / 2.5 - 1)  # raw: +20%, all of it from the treatment's larger x
    assert r["lift_cuped"] == pytest.approx(2.45 / 3.05 - 1)  # adjusted: -19.7%
    assert r["ci_low_cuped"] <= r["lift_cuped"] <= r["ci_high_cuped"]
    # metrics outside the CUPED set, and arms without covariates, get no CUPED lift
    assert math.isnan(_row(compare_arms({"c": c, "t": t}, "c", CFG, T0, 1, seed=0), "exposures")["lift_cuped"])
    plain = compare_arms({"c": arm(uploads=ups_c, creators=(1, 2)), "t": arm(uploads=ups_t, creators=(3, 4), name="t")},
                         "c", CFG, T0, 1, seed=0)
    assert plain["lift_cuped"].is_nan().all() and _row(plain, "publications")["lift"] == pytest.approx(0.2)


def cuped_arm(name: str, n_creators: int, *, seed: int, offset: int, lift: float = 0.0, days: int = 7) -> ArmData:
    """Creators with lognormal daily upload rates r_c; publications ~ Poisson(days r_c (1 + lift)) and a
    covariate ~ Poisson(days r_c) drawn independently (uploads the log schedules for the creator)."""
    rng = np.random.default_rng(seed)
    creators = offset + np.arange(n_creators, dtype=np.int64)
    rate = rng.lognormal(-0.5, 1.0, n_creators)
    n_up = rng.poisson(days * rate * (1 + lift))
    up_creator = np.repeat(creators, n_up)
    up_ts = T0 + rng.integers(0, days * D, up_creator.size)
    uploads = pl.DataFrame(
        {"day": ((up_ts - T0) // D).astype(np.int32), "item_id": offset * 100 + np.arange(up_creator.size),
         "creator_id": up_creator, "upload_ts": up_ts, "category": np.zeros(up_creator.size, np.int64),
         "origin": np.full(up_creator.size, "replay")}
    )
    base = arm(creators=creators, users=(offset,), name=name)
    return dataclasses.replace(base, uploads=uploads, creator_covariates=rng.poisson(days * rate)[:, None])


def test_cuped_narrows_the_ci_with_a_predictive_covariate():
    arms = {"c": cuped_arm("c", 1000, seed=1, offset=0), "t": cuped_arm("t", 1000, seed=2, offset=10**6, lift=0.1)}
    r = _row(compare_arms(arms, "c", BOOT_CFG, T0, 7, seed=0), "publications")
    raw_width, cuped_width = r["ci_high"] - r["ci_low"], r["ci_high_cuped"] - r["ci_low_cuped"]
    assert cuped_width < 0.7 * raw_width, (raw_width, cuped_width)
    assert r["ci_low_cuped"] < 0.1 < r["ci_high_cuped"] and r["significant_cuped"]


def two_sided_arm(name: str, n_users: int, n_creators: int, *, seed: int, offset: int, per_user: int = 30,
                  days: int = 3) -> ArmData:
    """Each user sees ``per_user`` catalogue items of random creators; P(like) = sigmoid(a_u + b_c - 3) with
    user and creator effects a_u, b_c ~ N(0, 1)."""
    rng = np.random.default_rng(seed)
    users = offset + np.arange(n_users, dtype=np.int64)
    creators = offset + np.arange(n_creators, dtype=np.int64)
    a, b = rng.normal(0, 1, n_users), rng.normal(0, 1, n_creators)
    u = np.repeat(np.arange(n_users), per_user)
    c = rng.integers(0, n_creators, u.size)
    ts = T0 + rng.integers(0, days * D, u.size)
    like = rng.random(u.size) < 1 / (1 + np.exp(3 - a[u] - b[c]))
    rows = [expo(int(s), int(users[i]), int(offset * 100 + j), OLD, creator=int(creators[j]), like=bool(lk))
            for s, i, j, lk in zip(ts, u, c, like)]
    return arm(rows, creators=creators, users=users, name=name)


def test_two_way_bootstrap_covers_users_and_creators():
    cfg = MetricsConfig(expo_k=[5], cold_age_hours=1, cold_max_exposures=10**6, bootstrap_samples=300)  # all cold
    arms = {"c": two_sided_arm("c", 400, 40, seed=1, offset=0), "t": two_sided_arm("t", 400, 40, seed=2, offset=10**6)}
    two = compare_arms(arms, "c", cfg, T0, 3, seed=0)
    one = compare_arms(arms, "c", cfg.model_copy(update={"bootstrap_two_way": False}), T0, 3, seed=0)
    read = ("interactions", "interactions_per_exposure", "cold_interactions", "engaged_users")
    width = {name: {m: _row(t, m)["ci_high"] - _row(t, m)["ci_low"] for m in read} for name, t in (("two", two), ("one", one))}
    # users only misses the 40 creators' effects, creators only the users'
    for m in ("interactions", "interactions_per_exposure", "cold_interactions", "engaged_users"):
        assert width["two"][m] > 1.05 * width["one"][m], (m, width)
    one_sided = ~pl.col("metric").is_in(list(TWO_WAY_METRICS))  # one-way over their unit either way
    assert two.filter(one_sided).equals(one.filter(one_sided))
    values = ["metric", "control_value", "arm_value"]
    assert two.select(values).equals(one.select(values))  # the point estimates do not change
    assert two.equals(compare_arms(arms, "c", cfg, T0, 3, seed=0))  # deterministic for a seed
    assert not two["ci_low"].equals(compare_arms(arms, "c", cfg, T0, 3, seed=1)["ci_low"])


def test_creator_covariates_from_the_log():
    import pyarrow as pa
    import pyarrow.compute as pc

    from simulator.core.schema import Log
    from simulator.world.platform import CREATOR_COVARIATES, creator_covariates

    items = pa.table({
        "item_id": [1, 2, 3, 4, 5], "creator_id": [7, 7, 8, 8, 9], "category": [0] * 5,
        "upload_ts": [T0 - D, T0 + H, T0 - 2 * D, T0 + 3 * D, T0 + D],
    })
    events = pa.table({  # the log's pre-period starts at its first event, T0 - 36 h
        "ts": [T0 - 36 * H, T0 - H, T0 - 2 * H, T0 + H, T0 - H], "user_id": [1, 2, 1, 1, 3], "item_id": [1, 1, 3, 3, 1],
        "event": ["like", "expose", "comment", "like", "follow"],
    })
    ids, cov = creator_covariates(Log("toy", events, items), T0)
    assert ids.tolist() == [7, 8, 9] and len(CREATOR_COVARIATES) == cov.shape[1]
    # catalogue (uploads before the pre-period: item 3 at T0 - 2 d), pre-period uploads (item 1 at T0 - 1 d),
    # pre interactions (like/comment/follow before T0)
    assert cov.tolist() == [[0, 1, 2], [1, 0, 1], [0, 0, 0]]
    # a log replayed from its first day has no pre-period: every earlier item is catalogue
    run_only = events.filter(pc.greater_equal(events["ts"], T0))
    assert creator_covariates(Log("toy", run_only, items), T0)[1].tolist() == [[1, 0, 0], [1, 0, 0], [0, 0, 0]]
    # nothing from T0 on: more uploads and likes in the run leave the covariates as they were
    later_items = pa.concat_tables([items, pa.table({
        "item_id": [6, 7], "creator_id": [9, 9], "category": [0, 0], "upload_ts": [T0, T0 + 2 * D]})])
    later_events = pa.concat_tables([events, pa.table({
        "ts": [T0, T0 + D], "user_id": [4, 5], "item_id": [1, 6], "event": ["like", "comment"]})])
    assert creator_covariates(Log("toy", later_events, later_items), T0)[1].tolist() == cov.tolist()


# ---------------------------------------------------------------- derived K: pooled, and re-derived per replicate

def test_replicate_k_is_np_quantile_of_the_expanded_sample():
    rng = np.random.default_rng(0)
    n = np.sort(rng.poisson(3.0, 50))
    w = rng.poisson(1.0, (30, 50))
    w[0] = 1  # unit weights: the K resolve_expo_k derives
    w[1] = 0  # a replicate that drew no item
    cum = np.cumsum(w, axis=1).astype(np.float64)
    for q in (0.07, 0.5, 0.9, 0.99, 1.0):
        got = replicate_k(n, cum, q, floor=1)
        assert np.isnan(got[1])
        for b in range(30):
            if b == 1:
                continue
            want = max(math.ceil(round(float(np.quantile(np.repeat(n, w[b]), q)), 9)), 1)
            assert got[b] == want, (q, b)
    assert (replicate_k(n, cum, 0.5, floor=7)[[0, 2, 3]] >= 7).all()


def test_replicate_reach_counts_weighted_items_at_or_above_k():
    n = np.array([0, 1, 2, 2, 5])
    cum = np.cumsum(np.array([[1, 0, 2, 1, 1], [1, 1, 1, 1, 1]]), axis=1).astype(np.float64)
    # K = 2: items 2, 3, 4 with weights 2 + 1 + 1 = 4 (replicate 0) and 3 (unit weights); K = 6: none; NaN stays NaN
    np.testing.assert_array_equal(replicate_reach(n, cum, np.array([2.0, 2.0])), [4.0, 3.0])
    np.testing.assert_array_equal(replicate_reach(n, cum, np.array([6.0, 1.0])), [0.0, 4.0])
    assert np.isnan(replicate_reach(n, cum, np.array([np.nan, 1.0]))[0])


def test_derived_k_pools_the_arms_and_is_rederived_only_for_those_arms():
    a, b = _window_arm(), dataclasses.replace(_window_arm(), name="b")
    derived = MetricsConfig(cold_age_hours=2, cold_max_exposures=2, bootstrap_samples=200)
    res = resolve_expo_k([a, b], derived, T0, 4)
    # pooled [0, 0, 1, 1, 2, 2, 3, 3, 10, 10]: q50 at position 4.5 = 2; q90 at 8.1 = 10 (one arm alone: 7.2 -> 8)
    assert expo_thresholds(res) == {"expo_reach_q50": 2, "expo_reach_q90": 10, "expo_reach_q99": 10}
    assert res.expo_k_arms == ["a", "b"] and res.expo_k_min == 1
    names = metric_names(res)
    assert derived_k(res, ["b", "a"], names).names == ["expo_reach_q50", "expo_reach_q90", "expo_reach_q99"]
    assert derived_k(res, ["a", "c"], names) is None  # a ladder pair: K stays the run's
    assert derived_k(CFG, ["a", "b"], metric_names(CFG)) is None  # fixed K


def test_derived_k_a_a_calibration_on_small_arms():
    """Identical small arms (~80 items each): with K re-derived per replicate from the pooled items, the ExpoReach
    CIs flag at most the nominal 5% of A/A cells (a K fixed from one arm's own items flagged more in the
    simulated A/A, docs/metrics.md)."""
    cfg0 = MetricsConfig(cold_age_hours=24, cold_max_exposures=20, bootstrap_samples=300, expo_window_days=2.0,
                         expo_quantiles=[0.5, 0.9])
    flagged = cells = 0
    for s in range(40):
        c = synthetic_arm("c", 40, 80, seed=100 + 2 * s, offset=0, pub_rate=0.3)
        t = synthetic_arm("t", 40, 80, seed=101 + 2 * s, offset=10**6, pub_rate=0.3)
        res = compare_arms({"c": c, "t": t}, "c", resolve_expo_k([c, t], cfg0, T0, 7), T0, 7, seed=s)
        e = res.filter(pl.col("metric").str.starts_with("expo_reach") & pl.col("lift").is_not_nan())
        flagged, cells = flagged + int(e["significant"].sum()), cells + e.height
    assert cells >= 60 and flagged / cells <= 0.08, (flagged, cells)


def _until(data: ArmData, day: int) -> ArmData:
    """The arm as the driver holds it at the end of ``day``."""
    end = T0 + (day + 1) * D
    return dataclasses.replace(data, exposures=data.exposures.filter(pl.col("ts") < end),
                               uploads=data.uploads.filter(pl.col("upload_ts") < end),
                               visits=data.visits.filter(pl.col("day") <= day))


@pytest.mark.parametrize("expo_k", [[3, 8], []])
def test_live_daily_rows_equal_the_daily_metrics_of_the_run_so_far(expo_k):
    """LiveDaily (the tracker's daily values, a day at a time, without re-sorting earlier days) gives exactly the
    last row of daily_metrics over the run so far, day after day, and after a resume (a fresh one from day 3).
    Catalogue items (uploaded before the run) are exposed too; a 2-day ExpoReach window makes censoring move."""
    cfg = MetricsConfig(expo_k=expo_k, cold_age_hours=6, cold_max_exposures=5, expo_window_days=2)
    data = synthetic_arm("t", 40, 300, seed=3, offset=1, days=6, pub_rate=0.4)
    rng = np.random.default_rng(0)
    old = data.exposures.sample(fraction=0.3, seed=1).with_columns(
        item_id=pl.lit(7, pl.Int64) + pl.Series(rng.integers(0, 20, int(0.3 * data.exposures.height))),
        upload_ts=pl.lit(OLD, pl.Int64))
    data = dataclasses.replace(data, exposures=pl.concat([data.exposures, old.select(data.exposures.columns)]))
    live, resumed = LiveDaily(cfg, T0), LiveDaily(cfg, T0)
    for day in range(6):
        so_far = _until(data, day)
        expected = daily_metrics(so_far, cfg, T0, day + 1).row(day, named=True)
        expected = {name: float(expected[name]) for name in metric_names(cfg)}
        assert live.row(so_far, day) == expected, day
        if day >= 3:
            assert resumed.row(so_far, day) == expected, day
    assert any(v > 0 for k, v in expected.items() if k.startswith("expo_reach")) == bool(expo_k)
    assert expected["cold_interactions"] > 0 and expected["new_item_coverage"] > 0
