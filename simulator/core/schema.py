"""Table schemas of coldsim (pyarrow) and the validation every log goes through on load.

This module is the bottom of the import graph: it imports only numpy, pyarrow and polars.

Three kinds of tables travel through the simulator:

* the **log** (``Log``): what a source (synthetic platform, MovieLens, KuaiRand catalogue,
  any parquet/csv) provides. ``events`` has one row per ``(ts, user_id, item_id, event)``
  with ``event`` in :data:`EVENT_TYPES`; ``items`` has one row per item with its creator,
  upload time and category; ``users`` is optional.
* the **simulated exposures** (:data:`EXPOSURES_SCHEMA`): one row per item an arm put in
  a slate, with the world's sampled response as boolean columns. Metrics read only this
  table plus the uploads and visits tables below.
* the **uploads** (:data:`UPLOADS_SCHEMA`) and **visits** (:data:`VISITS_SCHEMA`) of each
  arm and day.

Timestamps are integer seconds (unix time for real logs). Simulated day ``d`` covers
``[t0 + d * 86400, t0 + (d + 1) * 86400)`` where ``t0`` (:attr:`Log.t0`) is ``log.meta["start_ts"]``
when the source sets one (a midnight; events before it are a pre-period: history the world reads,
never replayed), else midnight (UTC) of the first event day of the replayed log.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

SECONDS_PER_DAY = 86_400

EVENT_TYPES: tuple[str, ...] = ("expose", "like", "comment", "follow", "share", "view")
"""Event vocabulary of a log. ``view`` is an *effective* view (watched long enough)."""

RESPONSE_TYPES: tuple[str, ...] = ("like", "comment", "follow", "share", "view")

N_USER_DENSE = 3
"""Dense user features every arm's feature store computes (serving.features.FeatureStore.user_dense)."""
N_PAIR_DENSE = 3
"""Dense user-item pair features of the ranker (serving.features.FeatureStore.pair_dense)."""
"""Responses the world samples for an exposure (every event type but ``expose``)."""

INTERACTION_TYPES: tuple[str, ...] = ("like", "comment", "follow")
"""Explicit positive interactions: creator feedback, cold-item interactions, item sequences."""

EVENTS_SCHEMA = pa.schema(
    [
        pa.field("ts", pa.int64(), nullable=False),
        pa.field("user_id", pa.int64(), nullable=False),
        pa.field("item_id", pa.int64(), nullable=False),
        pa.field("event", pa.string(), nullable=False),
    ]
)

ITEMS_REQUIRED = pa.schema(
    [
        pa.field("item_id", pa.int64(), nullable=False),
        pa.field("creator_id", pa.int64(), nullable=False),
        pa.field("upload_ts", pa.int64(), nullable=False),
        pa.field("category", pa.int64(), nullable=False),
    ]
)
"""Required item columns; sources may add numeric content-feature columns named ``f_*``."""

USERS_REQUIRED = pa.schema([pa.field("user_id", pa.int64(), nullable=False)])

EXPOSURES_SCHEMA = pa.schema(
    [
        ("day", pa.int32()),
        ("tick", pa.int32()),
        ("ts", pa.int64()),
        ("user_id", pa.int64()),
        ("item_id", pa.int64()),
        ("creator_id", pa.int64()),
        ("upload_ts", pa.int64()),
        ("position", pa.int16()),
        ("channel", pa.string()),
        ("like", pa.bool_()),
        ("comment", pa.bool_()),
        ("follow", pa.bool_()),
        ("share", pa.bool_()),
        ("view", pa.bool_()),
    ]
)
"""One simulated exposure in one arm. ``channel`` names the retrieval channel that
proposed the item (the first one when several did)."""

UPLOADS_SCHEMA = pa.schema(
    [
        ("day", pa.int32()),
        ("item_id", pa.int64()),
        ("creator_id", pa.int64()),
        ("upload_ts", pa.int64()),
        ("category", pa.int64()),
        ("origin", pa.string()),  # "replay" (from the log) or "dynamic" (creator dynamics)
    ]
)

VISITS_SCHEMA = pa.schema(
    [
        ("day", pa.int32()),
        ("user_id", pa.int64()),
        ("requests", pa.int32()),
    ]
)


class LogValidationError(ValueError):
    """A log table is malformed. The message names the source, the column and how many rows."""

    def __init__(self, source: str, column: str | None, n_rows: int, problem: str):
        self.source = source
        self.column = column
        self.n_rows = n_rows
        self.problem = problem
        where = f"column '{column}'" if column else "table"
        super().__init__(f"{source}: {where}: {problem} ({n_rows} row(s))")

    def __reduce__(self):  # picklable across processes (Ray workers)
        return (type(self), (self.source, self.column, self.n_rows, self.problem))


@dataclass(frozen=True)
class Log:
    """A validated log: events, items and optional users, plus what the source knows.

    ``truth`` is an optional response model the source can vouch for (the synthetic
    platform's generating model); the world uses it as its oracle instead of fitting one.
    """

    name: str
    events: pa.Table
    items: pa.Table
    users: pa.Table | None = None
    truth: Any = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def t0(self) -> int:
        """Start of day 0: ``meta["start_ts"]`` if the source sets it, else midnight (UTC) of the first event day.

        A source with a pre-period (the synthetic platform's ``pre_days``) sets ``meta["start_ts"]``, a
        midnight; its earlier events are history (observed outcomes, creator baselines and covariates),
        never replayed as simulated days.
        """
        start = self.meta.get("start_ts")
        if start is not None:
            start = int(start)
            if start % SECONDS_PER_DAY:
                raise ValueError(f"{self.name}: meta['start_ts'] = {start} is not a midnight (UTC)")
            return start
        first = int(pc.min(self.events["ts"]).as_py())
        return first - first % SECONDS_PER_DAY

    @property
    def n_days(self) -> int:
        """Days with events from :attr:`t0` on, through the last event's day (a pre-period is not counted)."""
        last = int(pc.max(self.events["ts"]).as_py())
        return max((last - self.t0) // SECONDS_PER_DAY + 1, 0)


def _coerce_int64(table: pa.Table, column: str, source: str) -> pa.Table:
    """Cast ``column`` to int64, naming the problem (nulls, NaN, unparsable) if it fails."""
    col = table[column]
    n_null = col.null_count
    if n_null:
        raise LogValidationError(source, column, n_null, "null/NaN values")
    if pa.types.is_floating(col.type):
        arr = col.to_numpy()
        bad = ~np.isfinite(arr)
        if bad.any():
            raise LogValidationError(source, column, int(bad.sum()), "NaN or infinite values")
        frac = arr != np.floor(arr)
        if frac.any():
            raise LogValidationError(source, column, int(frac.sum()), "non-integer values")
    elif pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        try:
            casted = pc.cast(col, pa.int64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            ok = pc.utf8_is_digit(col)
            n_bad = int(pc.sum(pc.invert(ok)).as_py() or 0)
            raise LogValidationError(source, column, max(n_bad, 1), "values that are not integers") from None
        return table.set_column(table.schema.get_field_index(column), column, casted)
    elif pa.types.is_timestamp(col.type):
        casted = pc.cast(pc.cast(col, pa.timestamp("s")), pa.int64())
        return table.set_column(table.schema.get_field_index(column), column, casted)
    try:
        casted = pc.cast(col, pa.int64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise LogValidationError(source, column, len(col), f"cannot be read as int64 ({exc})") from None
    return table.set_column(table.schema.get_field_index(column), column, casted)


def _require_columns(table: pa.Table, required: pa.Schema, source: str) -> None:
    for name in required.names:
        if name not in table.column_names:
            raise LogValidationError(
                source, name, table.num_rows, f"missing required column (have: {', '.join(table.column_names)})"
            )


def validate_events(events: pa.Table, source: str = "events") -> pa.Table:
    """Check and normalise an events table to :data:`EVENTS_SCHEMA`, sorted by ``ts``."""
    _require_columns(events, EVENTS_SCHEMA, source)
    events = events.select(EVENTS_SCHEMA.names)
    for name in ("ts", "user_id", "item_id"):
        events = _coerce_int64(events, name, source)
    ev = events["event"]
    if ev.null_count:
        raise LogValidationError(source, "event", ev.null_count, "null values")
    ev = pc.cast(ev, pa.string())
    known = pc.is_in(ev, value_set=pa.array(EVENT_TYPES))
    n_bad = int(pc.sum(pc.invert(known)).as_py() or 0)
    if n_bad:
        bad = pc.unique(pc.filter(ev, pc.invert(known))).to_pylist()[:5]
        raise LogValidationError(source, "event", n_bad, f"unknown event types {bad}; expected one of {list(EVENT_TYPES)}")
    events = events.set_column(3, "event", ev).cast(EVENTS_SCHEMA)
    events = events.take(pc.sort_indices(events, sort_keys=[("ts", "ascending"), ("user_id", "ascending"),
                                                            ("item_id", "ascending")]))  # a stable sort
    dup = _duplicate_events(events)
    if dup:
        raise LogValidationError(source, "ts,user_id,item_id,event", dup, "duplicated event keys")
    return events


def validate_items(items: pa.Table, source: str = "items") -> pa.Table:
    """Check and normalise an items table: required columns as int64, unique ``item_id``."""
    _require_columns(items, ITEMS_REQUIRED, source)
    for name in ITEMS_REQUIRED.names:
        items = _coerce_int64(items, name, source)
    for name in items.column_names:
        if name.startswith("f_"):
            col = items[name]
            if col.null_count:
                raise LogValidationError(source, name, col.null_count, "null/NaN feature values")
            items = items.set_column(items.schema.get_field_index(name), name, pc.cast(col, pa.float32()))
    dup = _count_duplicates(items, ["item_id"])
    if dup:
        raise LogValidationError(source, "item_id", dup, "duplicated item ids")
    keep = ITEMS_REQUIRED.names + [c for c in items.column_names if c.startswith("f_")]
    return items.select(keep).sort_by("item_id")


def validate_users(users: pa.Table, source: str = "users") -> pa.Table:
    _require_columns(users, USERS_REQUIRED, source)
    users = _coerce_int64(users, "user_id", source)
    dup = _count_duplicates(users, ["user_id"])
    if dup:
        raise LogValidationError(source, "user_id", dup, "duplicated user ids")
    return users.sort_by("user_id")


def validate_log(log: Log) -> Log:
    """Validate each table and their consistency; returns a new, normalised :class:`Log`."""
    events = validate_events(log.events, f"{log.name}: events")
    items = validate_items(log.items, f"{log.name}: items")
    users = validate_users(log.users, f"{log.name}: users") if log.users is not None else None
    if events.num_rows == 0:
        raise LogValidationError(f"{log.name}: events", None, 0, "no events")
    item_ids = items["item_id"].to_numpy()
    ev_items = events["item_id"].to_numpy()
    pos = np.searchsorted(item_ids, ev_items)
    pos_c = np.minimum(pos, len(item_ids) - 1)
    unknown = item_ids[pos_c] != ev_items
    if unknown.any():
        raise LogValidationError(
            f"{log.name}: events", "item_id", int(unknown.sum()), "item ids missing from the items table"
        )
    upload = items["upload_ts"].to_numpy()[pos_c]
    early = events["ts"].to_numpy() < upload
    if early.any():
        raise LogValidationError(
            f"{log.name}: events", "ts", int(early.sum()), "events before their item's upload_ts"
        )
    if users is not None:
        uids = users["user_id"].to_numpy()
        ev_users = events["user_id"].to_numpy()
        p = np.minimum(np.searchsorted(uids, ev_users), len(uids) - 1)
        missing = uids[p] != ev_users
        if missing.any():
            raise LogValidationError(
                f"{log.name}: events", "user_id", int(missing.sum()), "user ids missing from the users table"
            )
    return Log(name=log.name, events=events, items=items, users=users, truth=log.truth, meta=dict(log.meta))


def _duplicate_events(events: pa.Table) -> int:
    """Number of rows of ``events`` (sorted by ts, user_id, item_id) whose (ts, user_id, item_id, event) appeared in an
    earlier row. Only rows that share (ts, user_id, item_id) with a neighbour can repeat a key, so only those are
    compared: Arrow's hash grouping on the four keys held ~6 GB for a 30M-row log, this ~0.1 GB."""
    ts, users, items = (events[name].to_numpy() for name in ("ts", "user_id", "item_id"))
    same = (ts[1:] == ts[:-1]) & (users[1:] == users[:-1]) & (items[1:] == items[:-1])  # row r+1 continues r's group
    rows = np.flatnonzero(np.concatenate([same, [False]]) | np.concatenate([[False], same]))
    if len(rows) == 0:
        return 0
    group = np.cumsum(np.concatenate([[True], ~same]))[rows]
    code = pc.index_in(events["event"].take(pa.array(rows)), value_set=pa.array(EVENT_TYPES)).to_numpy(zero_copy_only=False)
    key = np.sort(group * len(EVENT_TYPES) + code)  # not np.unique: numpy 2's hashes, ~10x slower at 20M keys
    return int(np.count_nonzero(key[1:] == key[:-1]))


def _count_duplicates(table: pa.Table, keys: list[str]) -> int:
    """Number of rows whose key already appeared earlier in the table."""
    if table.num_rows == 0:
        return 0
    grouped = table.select(keys).group_by(keys).aggregate([])
    return table.num_rows - grouped.num_rows
