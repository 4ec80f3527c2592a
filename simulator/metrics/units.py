"""Per randomisation unit tables of an arm (creators, users, (user, creator) cells, items) and its share-invariant values."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import polars as pl
import scipy.sparse as sp

from simulator.core.config import MetricsConfig
from simulator.metrics.definitions import ArmData, expo_thresholds, metric_names
from simulator.metrics.expo_reach import item_reach, ordered_exposures, run_uploads, run_visits, window_counts


CELL_VALUES: tuple[str, ...] = ("exposures", "interactions", "shares", "views", "cold", "engaged", "active")
"""Sums over exposures kept per (user, creator) cell for the two-way bootstrap. ``active`` credits each day a user
was served to the creators of that day's exposures, in proportion to them, over the run's days; ``engaged``
does the same for the days the user interacted, in proportion to the interactions. Summed over creators they
are the user's served days and its ``engaged_users`` value."""


TWO_WAY: dict[str, tuple[str, str]] = {
    "interactions": ("interactions", "exposures"),  # times the users-only replicate of exposures per user
    "interactions_per_exposure": ("interactions", "exposures"),
    "share_rate": ("shares", "exposures"),
    "view_rate": ("views", "exposures"),
    "cold_interactions": ("cold", "per_creator"),
    "engaged_users": ("engaged", "active"),  # times the users-only replicate of served days per user
}
"""Sums over exposures: (numerator cell value, denominator: a cell value or ``per_creator``, the creator count)."""


RATE_TIMES_EXPOSURES: tuple[str, ...] = ("interactions",)
"""Per-user counts read as a two-way rate times exposures per user: the users' requests fix their exposures,
so only the rate may depend on the bucket's creators."""


TWO_WAY_METRICS: tuple[str, ...] = tuple(TWO_WAY)
"""Bootstrapped over users and creators together (product weights); the others over their unit only."""


@dataclass(frozen=True)
class UnitTable:
    """Per randomisation unit numerators and denominators: metric = sum(num) / sum(den)."""

    unit: Literal["creator", "user"]
    names: list[str]
    num: np.ndarray  # (n_units, M)
    den: np.ndarray  # (n_units, M)

    @classmethod
    def from_ratios(cls, unit: Literal["creator", "user"], ratios: dict[str, tuple[np.ndarray, np.ndarray]]) -> UnitTable:
        names = list(ratios)
        num = np.column_stack([ratios[n][0] for n in names])
        den = np.column_stack([ratios[n][1] for n in names])
        return cls(unit, names, num, den)

    def point(self) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.num.sum(0) / self.den.sum(0)


def unit_rows(units: np.ndarray, keys: np.ndarray, key: str, arm: str) -> np.ndarray:
    """Row of each id of ``keys`` in ``units``; ids that are not in ``units`` are an error (an arm's data
    leaking outside its bucket)."""
    if keys.size == 0:
        return np.empty(0, dtype=np.int64)
    order = np.argsort(units)
    sorted_units = units[order]
    pos = np.minimum(np.searchsorted(sorted_units, keys), max(units.size - 1, 0))
    bad = np.ones(keys.size, dtype=bool) if units.size == 0 else sorted_units[pos] != keys
    if bad.any():
        raise ValueError(f"arm '{arm}': {int(bad.sum())} {key} value(s) in the data are not in the arm's bucket")
    return order[pos]


def _scatter(units: np.ndarray, frame: pl.DataFrame, key: str, arm: str) -> dict[str, np.ndarray]:
    """Columns of ``frame`` (one row per unit id in ``key``) as dense float arrays aligned with ``units``.

    Units absent from ``frame`` get 0; ids in ``frame`` that are not in ``units`` are an error.
    """
    cols = [c for c in frame.columns if c != key]
    out = {c: np.zeros(units.size) for c in cols}
    rows = unit_rows(units, frame[key].to_numpy(), key, arm)  # keys are unique (frame is grouped by key)
    for c in cols:
        out[c][rows] = frame[c].cast(pl.Float64).to_numpy()
    return out


def _creator_table(arm: ArmData, cfg: MetricsConfig, t0: int, days: int, ex: pl.DataFrame) -> UnitTable:
    thresholds = expo_thresholds(cfg)
    ks = sorted(set(thresholds.values()))
    items = item_reach(ex, run_uploads(arm, cfg, t0, days), ks)
    up = _scatter(
        arm.creators,
        items.group_by("creator_id").agg(
            *[pl.col(f"reach_{k}").is_not_null().sum().alias(f"reach_{k}") for k in ks],
            active_days=pl.col("day").n_unique(),
            publications=pl.len(),
            covered=pl.col("first_day").is_not_null().sum(),
        ),
        "creator_id",
        arm.name,
    )
    cold = _scatter(
        arm.creators,
        ex.group_by("creator_id").agg(cold=pl.col("inter").filter(pl.col("cold")).sum()),
        "creator_id",
        arm.name,
    )
    one = np.ones(arm.creators.size)
    ratios = {name: (up[f"reach_{k}"], one) for name, k in thresholds.items()}
    ratios["dac"] = (up["active_days"] / max(days, 1), one)
    ratios["publications"] = (up["publications"], one)
    ratios["cold_interactions"] = (cold["cold"], one)
    ratios["new_item_coverage"] = (up["covered"], up["publications"])
    return UnitTable.from_ratios("creator", ratios)


def _user_table(arm: ArmData, days: int, ex: pl.DataFrame) -> UnitTable:
    per_user = _scatter(
        arm.users,
        ex.group_by("user_id").agg(
            exposures=pl.len(),
            interactions=pl.col("inter").sum(),
            shares=pl.col("share").sum(),
            views=pl.col("view").sum(),
            engaged_days=pl.col("day").filter(pl.col("inter") > 0).n_unique(),
        ),
        "user_id",
        arm.name,
    )
    visits = _scatter(
        arm.users, run_visits(arm, days).group_by("user_id").agg(visit_days=pl.col("day").n_unique()), "user_id", arm.name
    )
    one = np.ones(arm.users.size)
    n_exp = per_user["exposures"]
    ratios = {
        "exposures": (n_exp, one),
        "interactions": (per_user["interactions"], one),
        "interactions_per_exposure": (per_user["interactions"], n_exp),
        "share_rate": (per_user["shares"], n_exp),
        "view_rate": (per_user["views"], n_exp),
        "dau": (visits["visit_days"] / max(days, 1), one),
        "engaged_users": (per_user["engaged_days"] / max(days, 1), one),
    }
    return UnitTable.from_ratios("user", ratios)


@dataclass(frozen=True)
class CellTable:
    """An arm's sums over exposures per (user, creator) cell (:data:`CELL_VALUES`), for the two-way bootstrap.

    ``matrix`` stacks one sparse ``(n_small, n_large)`` matrix per cell value, the small side being the one
    with fewer units, so that a chunk of replicates costs one sparse-dense product.
    """

    matrix: sp.csr_matrix  # (V * n_small, n_large)
    users_small: bool
    n_users: int
    n_creators: int
    active_per_user: np.ndarray  # (n_users,) served days over the run's days: the users-only side of engaged_users

    def sums(self, w_user: np.ndarray, w_creator: np.ndarray) -> np.ndarray:
        """(b, V) replicate sums ``w_u^T X_v w_c`` of every cell value, for weights (b, n_users) and (b, n_creators)."""
        w_small, w_large = (w_user, w_creator) if self.users_small else (w_creator, w_user)
        b, n_small = w_small.shape
        partial = np.asarray(self.matrix @ np.ascontiguousarray(w_large.T))  # (V * n_small, b)
        return np.einsum("vsb,bs->bv", partial.reshape(len(CELL_VALUES), n_small, b), w_small)


def _cell_table(arm: ArmData, ex: pl.DataFrame, days: int) -> CellTable:
    # one row per exposure, in the frame's (deterministic) order: scipy sums the duplicates of a cell in that
    # order, so the float sums and the CIs are the same on every run (a polars group-by sums in thread order)
    user_day_inter = pl.col("inter").sum().over("user_id", "day")
    cells = ex.select(
        "user_id", "creator_id",
        exposures=pl.lit(1.0),
        interactions=pl.col("inter"),
        shares=pl.col("share"),
        views=pl.col("view"),
        cold=pl.when(pl.col("cold")).then(pl.col("inter")).otherwise(0),
        engaged=pl.when(user_day_inter > 0).then(pl.col("inter") / user_day_inter).otherwise(0.0) / max(days, 1),
        active=1.0 / pl.len().over("user_id", "day") / max(days, 1),
    )
    user_rows = unit_rows(arm.users, cells["user_id"].to_numpy(), "user_id", arm.name)
    creator_rows = unit_rows(arm.creators, cells["creator_id"].to_numpy(), "creator_id", arm.name)
    n_users, n_creators = arm.users.size, arm.creators.size
    users_small = n_users <= n_creators
    small, large = (user_rows, creator_rows) if users_small else (creator_rows, user_rows)
    n_small, n_large = (n_users, n_creators) if users_small else (n_creators, n_users)
    n_values = len(CELL_VALUES)
    matrix = sp.coo_matrix(
        (
            np.concatenate([cells[v].cast(pl.Float64).to_numpy() for v in CELL_VALUES]),
            (np.concatenate([v * n_small + small for v in range(n_values)]), np.tile(large, n_values)),
        ),
        shape=(n_values * n_small, n_large),
    ).tocsr()
    active = np.zeros(n_users)
    np.add.at(active, user_rows, cells["active"].to_numpy())
    return CellTable(matrix, users_small, n_users, n_creators, active)


def two_way_values(
    sums: np.ndarray, w_user_total: np.ndarray, w_creator_total: np.ndarray, cells: CellTable
) -> np.ndarray:
    """(b, len(TWO_WAY_METRICS)) replicate ratios from the (b, V) cell sums (before :data:`RATE_TIMES_EXPOSURES`).

    A rate divides by the replicate's exposures; the per-creator count by the replicate's cell mass
    ``(sum w_u)(sum w_c)`` over the number of users (at unit weights: the number of creators).
    """
    col = {v: i for i, v in enumerate(CELL_VALUES)}
    out = np.empty((sums.shape[0], len(TWO_WAY)))
    with np.errstate(divide="ignore", invalid="ignore"):
        for j, (num, den) in enumerate(TWO_WAY.values()):
            if den == "per_creator":
                d = w_user_total * w_creator_total / cells.n_users if cells.n_users else np.full(sums.shape[0], np.nan)
            else:
                d = sums[:, col[den]]
            out[:, j] = sums[:, col[num]] / d
    return out


@dataclass(frozen=True)
class ItemExposures:
    """The uncensored run-uploaded items of an arm sorted by their exposures within the window: ``n`` (ascending)
    and the row of each item's creator in the arm's bucket (for a replicate's item weights ``w_c[rows]``)."""

    n: np.ndarray  # (n_items,) int64, ascending
    rows: np.ndarray  # (n_items,) creator rows


def _item_exposures(arm: ArmData, cfg: MetricsConfig, t0: int, days: int, ex: pl.DataFrame) -> ItemExposures:
    items = window_counts(arm, cfg, t0, days, ex).sort("n", "item_id")
    rows = unit_rows(arm.creators, items["creator_id"].to_numpy(), "creator_id", arm.name)
    return ItemExposures(items["n"].to_numpy(), rows)


@dataclass(frozen=True)
class ArmTables:
    """Everything the comparison needs from one arm: the one-way per-unit tables, the two-way cell table and the
    items' window exposures (for the derived K)."""

    creator: UnitTable
    user: UnitTable
    cells: CellTable
    items: ItemExposures

    @property
    def names(self) -> list[str]:
        return self.creator.names + self.user.names

    def point(self) -> np.ndarray:
        return np.concatenate([self.creator.point(), self.user.point()])


def unit_tables(arm: ArmData, cfg: MetricsConfig, t0: int, days: int) -> tuple[UnitTable, UnitTable]:
    """Creator-side and user-side per-unit (numerator, denominator) tables of one arm."""
    ex = ordered_exposures(arm, cfg, t0, days)
    return _creator_table(arm, cfg, t0, days, ex), _user_table(arm, days, ex)


def arm_tables(arm: ArmData, cfg: MetricsConfig, t0: int, days: int) -> ArmTables:
    ex = ordered_exposures(arm, cfg, t0, days)
    return ArmTables(_creator_table(arm, cfg, t0, days, ex), _user_table(arm, days, ex), _cell_table(arm, ex, days),
                      _item_exposures(arm, cfg, t0, days, ex))


def normalised_metrics(arm: ArmData, cfg: MetricsConfig, t0: int, days: int) -> dict[str, float]:
    """Share-invariant run-level values (the ``arm_value`` of :func:`compare_arms`)."""
    out: dict[str, float] = {}
    for table in unit_tables(arm, cfg, t0, days):
        out.update(zip(table.names, map(float, table.point())))
    return {name: out[name] for name in metric_names(cfg)}
