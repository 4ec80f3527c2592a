"""Tests of simulator.metrics: each metric on a hand-built arm, then the bootstrap lifts."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from simulator import metrics
from simulator.config import MetricsConfig
from simulator.metrics import (
    ArmData,
    compare_arms,
    daily_metrics,
    exposures_by_age,
    metric_names,
    normalised_metrics,
    overall_metrics,
)
from simulator.schema import EXPOSURES_SCHEMA, SECONDS_PER_DAY, UPLOADS_SCHEMA, VISITS_SCHEMA

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
    d = daily_metrics(arm(ex, ups), CFG, T0, days=3)
    # reach-2: day 0 {10}; day 1 {10, 12}; day 2 {10, 12, 11}
    assert d["expo_reach_2"].to_list() == [1, 2, 3]
    # reach-3: day 0 {}; day 1 {10, 12}; day 2 unchanged
    assert d["expo_reach_3"].to_list() == [0, 2, 2]
    o = overall_metrics(arm(ex, ups), CFG, T0, days=3)
    assert (o["expo_reach_2"], o["expo_reach_3"]) == (3.0, 2.0)
    # cut after day 1 (days=2): item 11's day-2 exposure is outside the run
    assert overall_metrics(arm(ex, ups), CFG, T0, days=2)["expo_reach_2"] == 2.0


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
    monkeypatch.setattr(metrics, "_BOOTSTRAP_CHUNK_BYTES", 8 * 600 * 7)  # 7 replicates per chunk
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
    lad = metrics.ladder_comparison(arms, ["a", "b", "c"], BOOT_CFG, T0, 7, seed=0)
    assert lad["arm"].unique(maintain_order=True).to_list() == ["b", "c"]
    b, c = (lad.filter((pl.col("arm") == x) & (pl.col("metric") == "publications")).row(0, named=True) for x in "bc")
    assert b["baseline"] == "a" and c["baseline"] == "b"
    # each step is the pairwise comparison: c's lift is over b, not over a
    assert c["lift"] == pytest.approx(c["arm_value"] / b["arm_value"] - 1)
    pair = compare_arms({"b": arms["b"], "c": arms["c"]}, "b", BOOT_CFG, T0, 7, seed=0)
    assert c["ci_low"] == _row(pair, "publications", "c")["ci_low"]
    with pytest.raises(ValueError, match="ladder arms"):
        metrics.ladder_comparison(arms, ["a", "zz"], BOOT_CFG, T0, 7, seed=0)
