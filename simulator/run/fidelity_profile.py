"""What each source of the fidelity report is made of, measured: the figures that say why a table may not reproduce.

For every source (the synthetic world or a log) the profile counts the log the offline protocols split (users,
items, positives, how much history a user has before the split, how many later positives come from users or items
never seen before it) and reads what the protocols measured (the floors of the Next-User protocol, the tail share of
the IHM protocol) and what the A/B runs were (days, ExpoReach's K, users per arm).
"""

from __future__ import annotations

import numpy as np
import polars as pl

POSITIVES = ("like", "comment")

PROFILE_COLUMNS = {
    "source": "source",
    "days": "days in the log",
    "users": "users",
    "items": "items",
    "positives": "positives (likes and comments)",
    "user_positives_median": "positives per user before the split (median)",
    "item_positives_median": "positives per liked item before the split (median)",
    "later_from_new_users": "later positives by users never seen before the split",
    "later_on_new_items": "later positives on items with no positive before the split",
    "nu_most_active_over_random": "Next-User: most-active floor / random, Recall@20",
    "nu_model_over_most_active": "Next-User: full model / most-active floor, Recall@20",
    "nu_truth_over_most_active": "Next-User: the world's truth / most-active floor, Recall@20 (synthetic only)",
    "ihm_tail_share": "IHM: tail items' share of the test positives",
    "ab_days": "A/B: days simulated",
    "ab_dau_per_arm": "A/B: daily active users per arm (mean over arms and days)",
    "ab_expo_k": "A/B: ExpoReach's K (lowest / highest)",
}
"""Profile column -> what it means (the doc's row labels)."""


def log_profile(log, train_frac: float = 0.7) -> dict[str, float]:
    """Counts of a log around the offline protocols' split (after ``train_frac`` of its days)."""
    from simulator.core.schema import SECONDS_PER_DAY

    ev = pl.from_arrow(log.events)
    split = log.t0 + max(1, int(round(log.n_days * train_frac))) * SECONDS_PER_DAY
    pos = ev.filter(pl.col("event").is_in(POSITIVES)).unique(["user_id", "item_id"], keep="first")
    before, after = pos.filter(pl.col("ts") < split), pos.filter(pl.col("ts") >= split)
    seen_users = ev.filter(pl.col("ts") < split)["user_id"].unique()
    liked_items = before["item_id"].unique()
    per_user = before.group_by("user_id").len()["len"].to_numpy()
    per_item = before.group_by("item_id").len()["len"].to_numpy()
    share = lambda mask: float(mask.mean()) if after.height else float("nan")  # noqa: E731
    return {
        "days": float(log.n_days), "users": float(ev["user_id"].n_unique()), "items": float(log.items.num_rows),
        "positives": float(pos.height),
        "user_positives_median": float(np.median(per_user)) if len(per_user) else float("nan"),
        "item_positives_median": float(np.median(per_item)) if len(per_item) else float("nan"),
        "later_from_new_users": share(~after["user_id"].is_in(seen_users).to_numpy()),
        "later_on_new_items": share(~after["item_id"].is_in(liked_items).to_numpy()),
    }


def ab_runs(outcome) -> list:
    """The A/B runs of an outcome: a replicate group's runs, or the single run."""
    return list(getattr(outcome, "runs", None) or [outcome])


def _ratio(a: float | None, b: float | None) -> float:
    return float(a / b) if a is not None and b else float("nan")


def profile_source(source: str, outcomes: dict, budget, next_user_scenario) -> dict:
    """The profile of one source from the outcomes of its sections (``(source, section) -> outcome``); the log is
    the one the Next-User protocol read (``next_user_scenario`` at the budget's scale)."""
    from simulator.run.logs import load_log

    row: dict = {"source": source}
    sc = next_user_scenario.at_scale(budget.scale if source == "synthetic" else None)
    if (source, "next_user_offline") in outcomes or (source, "ihm_offline") in outcomes:
        log = load_log(None if source == "synthetic" else source, sc)
        row.update(log_profile(log, sc.offline.train_frac))
    nu = outcomes.get((source, "next_user_offline"))
    if nu is not None:
        floors = nu.meta.get("floors", {})
        full = nu.table.filter(pl.col("variant") == sc.control)["recall_20"][0]
        most = floors.get("most_active", {}).get("recall_20")
        row["nu_most_active_over_random"] = _ratio(most, nu.meta.get("random_recall_20"))
        row["nu_model_over_most_active"] = _ratio(full, most)
        row["nu_truth_over_most_active"] = _ratio(floors.get("truth", {}).get("recall_20"), most)
    ihm = outcomes.get((source, "ihm_offline"))
    if ihm is not None:
        row["ihm_tail_share"] = _ratio(ihm.meta.get("test_tail_events"), ihm.meta.get("test_events"))
    ab = outcomes.get((source, "ab"))
    if ab is not None:
        first = ab_runs(ab)[0].result
        row["ab_days"] = float(first.days)
        dau = [v.get("dau", float("nan")) for v in first.overall.values()]
        row["ab_dau_per_arm"] = float(np.nanmean(dau)) if dau else float("nan")
        ks = sorted(first.expo_k.values())
        row["ab_expo_k"] = f"{ks[0]} / {ks[-1]}" if ks else "-"
    return {column: row.get(column, float("nan") if column != "ab_expo_k" else "-") for column in PROFILE_COLUMNS}
