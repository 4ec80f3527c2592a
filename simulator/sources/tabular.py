"""Any parquet/csv log with a column mapping, plus the table helpers the other real-log sources share."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from simulator.schema import (
    EVENT_TYPES,
    Log,
    LogValidationError,
    validate_events,
    validate_items,
    validate_log,
    validate_users,
)

EVENT_COLUMNS: tuple[str, ...] = ("ts", "user_id", "item_id", "event")
"""Columns every events file must provide (after the mapping)."""

MAPPABLE_COLUMNS: tuple[str, ...] = ("ts", "user_id", "item_id", "event", "creator_id", "upload_ts", "category")
"""coldsim column names a ``mapping`` may point at a file's own column names."""

_ISO_FORMATS: tuple[str, ...] = (
    "%Y-%m-%dT%H:%M:%S%.f%#z",
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%dT%H:%M%#z",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d",
)
"""ISO-8601 layouts ``to_unix_seconds`` accepts (a space may replace the ``T``); no zone means UTC."""

NUMBER_PATTERN = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"
"""A decimal number as text (``12``, ``-3.5``, ``1e9``)."""


def _read_csv(path: Path) -> pa.Table:
    return pacsv.read_csv(path)


def _read_tsv(path: Path) -> pa.Table:
    return pacsv.read_csv(path, parse_options=pacsv.ParseOptions(delimiter="\t"))


def _read_parquet(path: Path) -> pa.Table:
    return pq.read_table(path)


READERS: dict[str, Callable[[Path], pa.Table]] = {
    ".csv": _read_csv,
    ".csv.gz": _read_csv,
    ".tsv": _read_tsv,
    ".parquet": _read_parquet,
    ".pq": _read_parquet,
}
"""File-name suffix -> reader; the only place that knows the supported table formats."""


def read_table(path: str | Path) -> pa.Table:
    """Read a csv/tsv/parquet file into an arrow table, choosing the reader by extension."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    name = path.name.lower()
    for suffix, reader in sorted(READERS.items(), key=lambda kv: -len(kv[0])):
        if name.endswith(suffix):
            return reader(path)
    raise ValueError(f"{path}: unsupported table format; expected one of {sorted(READERS)}")


def to_unix_seconds(values: pa.ChunkedArray | pa.Array, source: str, column: str) -> pa.Array:
    """Integer unix seconds from int/float seconds, numeric strings, ISO-8601 strings, dates or timestamps.

    Floats are floored; timestamps without a zone and ISO strings without an offset are read as
    UTC. Nulls, NaN and unparsable values raise :class:`LogValidationError` naming how many rows.
    """
    s = pl.Series(column, values)
    n_null = s.null_count()
    if n_null:
        raise LogValidationError(source, column, n_null, "missing (null) timestamps")
    dtype = s.dtype
    if dtype.is_integer():
        return s.cast(pl.Int64).to_arrow()
    if dtype.is_float():
        bad = int((~s.is_finite()).sum())
        if bad:
            raise LogValidationError(source, column, bad, "NaN or infinite timestamps")
        return s.floor().cast(pl.Int64).to_arrow()
    if dtype == pl.Date:
        return s.cast(pl.Datetime("us")).dt.epoch("s").to_arrow()
    if isinstance(dtype, pl.Datetime):
        return s.dt.epoch("s").to_arrow()
    if dtype != pl.String:
        raise LogValidationError(source, column, len(s), f"cannot read timestamps of type {dtype}")
    s = s.str.strip_chars()
    if bool(s.str.contains(NUMBER_PATTERN).all()):
        return to_unix_seconds(s.cast(pl.Float64).to_arrow(), source, column)
    iso = s.str.replace(r"^(\d{4}-\d{2}-\d{2})\s+", "${1}T")
    parsed = pl.select(
        pl.coalesce(
            [iso.str.to_datetime(f, strict=False, exact=True, time_zone="UTC").dt.epoch("s") for f in _ISO_FORMATS]
        )
    ).to_series()
    n_bad = parsed.null_count()
    if n_bad:
        examples = s.filter(parsed.is_null()).unique(maintain_order=True).head(3).to_list()
        raise LogValidationError(
            source, column, n_bad, f"unparsable timestamps (e.g. {examples}); expected unix seconds or ISO-8601"
        )
    return parsed.to_arrow()


def encode_attributes(df: pl.DataFrame, id_column: str) -> pl.DataFrame:
    """Keep ``id_column`` and every attribute as a number: numeric columns as float64, numeric
    strings parsed, other strings as int64 category codes (sorted distinct values, null -> -1);
    other types (lists, dates) are dropped."""
    out: list[pl.Series] = [df[id_column]]
    for name in df.columns:
        if name == id_column:
            continue
        s = df[name]
        if s.dtype.is_numeric() or s.dtype == pl.Boolean:
            out.append(s.cast(pl.Float64))
        elif s.dtype == pl.String:
            t = s.str.strip_chars()
            if bool(t.drop_nulls().str.contains(NUMBER_PATTERN).all()) and t.null_count() < len(t):
                out.append(t.cast(pl.Float64))
            else:
                out.append((t.rank("dense").cast(pl.Int64) - 1).fill_null(-1).alias(name))
    return pl.DataFrame(out)


def load_tabular(
    events_path: str | Path,
    items_path: str | Path | None = None,
    users_path: str | Path | None = None,
    mapping: Mapping[str, str] | None = None,
    event_mapping: Mapping[str, str] | None = None,
) -> Log:
    """Load a log from parquet/csv files (format chosen by extension).

    ``mapping`` maps coldsim column names (:data:`MAPPABLE_COLUMNS`) to the files' own column
    names; the same mapping applies to the events, items and users files. ``event_mapping``
    maps the file's event values (compared as strings) to coldsim event types.

    Without an items file, items come from the events: ``creator_id`` from the events' creator
    column (required), ``upload_ts`` = the item's first event, ``category`` from the events'
    category column if there is one, else 0. With an items file that has no ``upload_ts``
    column, the item's first event is used and items without events are dropped; a missing
    ``category`` column gives 0. Users: ``user_id`` plus every other column as a number
    (see :func:`encode_attributes`). Every error names the file, the column and the row count.
    """
    events_path = Path(events_path)
    mapping = dict(mapping or {})
    unknown = sorted(set(mapping) - set(MAPPABLE_COLUMNS))
    if unknown:
        raise ValueError(f"unknown coldsim columns in mapping: {unknown}; expected some of {list(MAPPABLE_COLUMNS)}")
    ev_map = dict(event_mapping or {})
    bad_targets = sorted({v for v in ev_map.values() if v not in EVENT_TYPES})
    if bad_targets:
        raise ValueError(f"event_mapping targets {bad_targets} are not coldsim event types {list(EVENT_TYPES)}")

    raw = read_table(events_path)
    src = str(events_path)
    events = _pick(raw, mapping, EVENT_COLUMNS, ("creator_id", "category"), src)
    events = events.set_column(0, "ts", to_unix_seconds(events["ts"], src, "ts"))
    events = events.set_column(3, "event", _map_events(events["event"], ev_map))
    valid = validate_events(events.select(list(EVENT_COLUMNS)), src)  # file-level errors name this file

    meta: dict[str, object] = {"events_path": src}
    if items_path is None:
        items = _items_from_events(events, src)
    else:
        items, n_dropped = _read_items(Path(items_path), valid, mapping)
        meta |= {"items_path": str(items_path), "items_without_events_dropped": n_dropped}

    users = None
    if users_path is not None:
        upath = Path(users_path)
        users_raw = _pick(read_table(upath), mapping, ("user_id",), (), str(upath), keep_rest=True)
        users = validate_users(encode_attributes(pl.from_arrow(users_raw), "user_id").to_arrow(), str(upath))
        meta["users_path"] = str(upath)

    log = Log(name=f"tabular:{events_path}", events=valid, items=items, users=users, meta=meta)
    return validate_log(log)


def _pick(
    table: pa.Table,
    mapping: Mapping[str, str],
    required: tuple[str, ...],
    optional: tuple[str, ...],
    source: str,
    keep_rest: bool = False,
) -> pa.Table:
    """Columns ``required + optional`` under coldsim names (renamed via ``mapping``); ``f_*``
    columns always, and every other column too when ``keep_rest``."""
    have = table.column_names
    cols: dict[str, pa.ChunkedArray] = {}
    for ours in (*required, *optional):
        theirs = mapping.get(ours, ours)
        if theirs in have:
            cols[ours] = table[theirs]
        elif ours in required:
            hint = f"the mapping names it for '{ours}'" if theirs != ours else f"map one with {ours}=<column>"
            raise LogValidationError(source, theirs, table.num_rows, f"missing column ({hint}); have {have}")
    used = {mapping.get(c, c) for c in cols}
    for name in have:
        if name not in used and name not in cols and (keep_rest or name.startswith("f_")):
            cols[name] = table[name]
    return pa.table(cols)


def _map_events(values: pa.ChunkedArray, ev_map: Mapping[str, str]) -> pa.ChunkedArray:
    """Event values as strings, translated through ``ev_map`` (values not in it are kept)."""
    ev = pc.cast(values, pa.string())
    if not ev_map:
        return ev
    keys = pa.array(list(ev_map), pa.string())
    idx = pc.index_in(ev, value_set=keys)
    mapped = pc.take(pa.array(list(ev_map.values()), pa.string()), idx)
    return pc.coalesce(mapped, ev)


def _items_from_events(events: pa.Table, source: str) -> pa.Table:
    """One row per item of the events: its creator, first event time and category."""
    if "creator_id" not in events.column_names:
        raise LogValidationError(
            source, "creator_id", events.num_rows,
            "missing column: without an items file the events need a creator column (map one with creator_id=<column>)",
        )
    aggs = [("ts", "min"), ("creator_id", "min"), ("creator_id", "count_distinct")]
    if "category" in events.column_names:
        aggs.append(("category", "min"))
    g = events.group_by("item_id").aggregate(aggs)
    n_multi = int(pc.sum(pc.greater(g["creator_id_count_distinct"], 1)).as_py() or 0)
    if n_multi:
        raise LogValidationError(source, "creator_id", n_multi, "items with more than one creator_id in the events")
    category = g["category_min"] if "category_min" in g.column_names else pa.array(np.zeros(g.num_rows, np.int64))
    items = pa.table(
        {"item_id": g["item_id"], "creator_id": g["creator_id_min"], "upload_ts": g["ts_min"], "category": category}
    )
    return validate_items(items, f"{source} (items derived from events)")


def _read_items(path: Path, events: pa.Table, mapping: Mapping[str, str]) -> tuple[pa.Table, int]:
    """The items file under coldsim names, deriving a missing ``upload_ts`` from the (validated)
    events and a missing ``category`` as 0. Returns (items, number of items dropped for having no events)."""
    src = str(path)
    items = _pick(read_table(path), mapping, ("item_id", "creator_id"), ("upload_ts", "category"), src)
    n_dropped = 0
    if "category" not in items.column_names:
        items = items.append_column("category", pa.array(np.zeros(items.num_rows, np.int64)))
    if "upload_ts" in items.column_names:
        ts = to_unix_seconds(items["upload_ts"], src, "upload_ts")
        items = items.set_column(items.schema.get_field_index("upload_ts"), "upload_ts", ts)
    else:  # no upload time in the file: the item's first event; ids checked first so the join is on int64
        items = validate_items(items.append_column("upload_ts", pa.array(np.zeros(items.num_rows, np.int64))), src)
        first = events.group_by("item_id").aggregate([("ts", "min")]).rename_columns(["item_id", "upload_ts"])
        joined = items.drop_columns(["upload_ts"]).join(first, "item_id", join_type="inner")
        n_dropped = items.num_rows - joined.num_rows
        items = joined
    return validate_items(items, src), n_dropped
