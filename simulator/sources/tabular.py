"""Any parquet/csv/json-lines log with a column mapping and reading options (:mod:`simulator.sources.tabular_options`),
plus the attribute and creator helpers of the other sources."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from simulator.core.schema import (
    EVENT_TYPES,
    Log,
    LogValidationError,
    validate_events,
    validate_items,
    validate_log,
    validate_users,
)
from simulator.sources.table_files import SourceTable, read_source
from simulator.sources.tabular_options import LAYOUT_SIGNATURES, NUMBER_PATTERN, RULE_OPERATORS, EventRule, TabularOptions
from simulator.sources.timestamps import check_timestamps, timestamps_from_parts, to_unix_seconds


EVENT_COLUMNS: tuple[str, ...] = ("ts", "user_id", "item_id", "event")
"""Columns every events file must provide (after the mapping)."""


MAPPABLE_COLUMNS: tuple[str, ...] = ("ts", "user_id", "item_id", "event", "creator_id", "upload_ts", "category")
"""coldsim column names a ``mapping`` may point at a file's own column names."""


ID_COLUMNS: tuple[str, ...] = ("user_id", "item_id", "creator_id")


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


def group_creators(item_ids: pa.Array | pa.ChunkedArray | np.ndarray, group_size: int) -> np.ndarray:
    """Made-up creators for items without one: the distinct items in increasing id order are cut into
    consecutive groups of ``group_size``; group ``k`` is creator ``k``. Returns one creator per input item."""
    ids = np.asarray(item_ids.to_numpy() if hasattr(item_ids, "to_numpy") else item_ids)
    uniq, inverse = np.unique(ids, return_inverse=True)
    return (np.arange(len(uniq), dtype=np.int64) // group_size)[inverse]


def load_tabular(
    events_path: str | Path,
    items_path: str | Path | None = None,
    users_path: str | Path | None = None,
    mapping: Mapping[str, str] | None = None,
    event_mapping: Mapping[str, str] | None = None,
    options: TabularOptions | None = None,
) -> Log:
    """Load a log from parquet/csv/tsv/json-lines files (format chosen by extension, delimiter by content).

    ``mapping`` maps coldsim column names (:data:`MAPPABLE_COLUMNS`) to the files' own column
    names; the same mapping applies to the events, items and users files. ``mapping["event"]`` may
    name a coldsim event type instead of a column (a file column of that name wins): every row is
    then that event. ``event_mapping`` maps the file's event values to coldsim event types (as
    numbers when the column and the keys are numbers, else as strings). ``options``: see
    :class:`TabularOptions` (delimiter, header names, event rules, timestamp unit/layout/parts,
    plausibility checks, string ids, the creator fallback, duplicates).

    Without an items file, items come from the events: ``creator_id`` from the events' creator
    column (or :func:`group_creators` with ``options.creator_group_size``), ``upload_ts`` = the
    item's first event, ``category`` from the events' category column if there is one, else 0. With
    an items file that has no ``upload_ts`` column, the item's first event is used and items without
    events are dropped; a missing ``category`` column gives 0. Users: ``user_id`` plus every other
    column as a number (see :func:`encode_attributes`). Every error names the file, the column and
    the row count (or the line, for a malformed file).
    """
    options = options or TabularOptions()
    events_path = Path(events_path)
    mapping = dict(mapping or {})
    unknown = sorted(set(mapping) - set(MAPPABLE_COLUMNS))
    if unknown:
        raise ValueError(f"unknown coldsim columns in mapping: {unknown}; expected some of {list(MAPPABLE_COLUMNS)}")
    ev_map = dict(event_mapping or {})
    bad_targets = sorted({v for v in ev_map.values() if v not in EVENT_TYPES})
    if bad_targets:
        raise ValueError(f"event_mapping targets {bad_targets} are not coldsim event types {list(EVENT_TYPES)}")
    if options.year and "ts" in mapping:
        raise ValueError(f"give either ts={mapping['ts']} or year=/month=/day= columns, not both")

    ev_src = read_source(events_path, options)
    src = ev_src.source
    events, meta = _events(ev_src, mapping, ev_map, options)
    items_raw = users_raw = None
    if items_path is not None:
        items_src = read_source(items_path, options)
        required = ("item_id",) if options.creator_group_size else ("item_id", "creator_id")
        items_raw = _pick(items_src.table, mapping, required, ("creator_id", "upload_ts", "category"), items_src.source)
    if users_path is not None:
        users_src = read_source(users_path, options)
        users_raw = _pick(users_src.table, mapping, ("user_id",), (), users_src.source, keep_rest=True)

    if options.ids == "codes":
        events, items_raw, users_raw = _encode_ids(events, items_raw, users_raw)
        meta["ids"] = "codes"
    if options.duplicates == "drop":
        n_before = events.num_rows
        events = pl.from_arrow(events).unique(subset=list(EVENT_COLUMNS), keep="first", maintain_order=True).to_arrow()
        meta["duplicate_events_dropped"] = n_before - events.num_rows
    valid = validate_events(events.select(list(EVENT_COLUMNS)), src)  # file-level errors name this file

    if items_path is None:
        items = _items_from_events(events, src, options.creator_group_size)
    else:
        items, n_dropped = _read_items(items_src, items_raw, valid, options)
        meta |= {"items_path": str(items_path), "items_without_events_dropped": n_dropped}
    if "creator_id" not in (events.column_names if items_path is None else items_raw.column_names):
        meta["creator_rule"] = f"group_creators(creator_group_size={options.creator_group_size})"

    users = None
    if users_raw is not None:
        users = validate_users(encode_attributes(pl.from_arrow(users_raw), "user_id").to_arrow(), users_src.source)
        meta["users_path"] = users_src.source

    log = Log(name=f"tabular:{events_path}", events=valid, items=items, users=users, meta=meta)
    return validate_log(log)


def _events(
    ev_src: SourceTable, mapping: Mapping[str, str], ev_map: Mapping[str, str], options: TabularOptions
) -> tuple[pa.Table, dict[str, object]]:
    """The events file as ``ts, user_id, item_id, event`` (plus ``creator_id``/``category`` when present),
    with rule events appended; timestamps converted and checked."""
    raw, src = ev_src.table, ev_src.source
    have = raw.column_names
    event_col = mapping.get("event", "event")
    constant = event_col if event_col not in have and event_col in EVENT_TYPES else None
    required = tuple(c for c in EVENT_COLUMNS if not (c == "event" and constant) and not (c == "ts" and options.year))
    try:
        picked = _pick(raw, mapping, required, ("creator_id", "category"), src)
    except LogValidationError as exc:
        hints = [_layout_hint(have)]
        if exc.column == mapping.get("ts", "ts"):
            hints.append("dates in parts need year=COLUMN (and month=, day=)")
        hints.append("every row one event type needs event=TYPE" if exc.column == event_col else None)
        hint = "; ".join(h for h in hints if h)
        if hint:
            raise LogValidationError(exc.source, exc.column, exc.n_rows, f"{exc.problem}; {hint}") from None
        raise
    meta: dict[str, object] = {"events_path": src}
    if options.year:
        ts = timestamps_from_parts(ev_src, options.year, options.month, options.day)
        ts_raw, ts_col = None, ",".join(c for c in (options.year, options.month, options.day) if c)
    else:
        ts_col = mapping.get("ts", "ts")
        ts_raw = picked["ts"]
        ts = to_unix_seconds(ts_raw, src, ts_col, options.ts_unit, options.ts_format)
    if options.ts_check and ts_raw is not None:
        check_timestamps(ts, ts_raw, ev_src, ts_col, options.ts_unit)
    n = raw.num_rows
    event = pa.array([constant] * n, pa.string()) if constant else _map_events(picked["event"], ev_map)
    cols = {"ts": ts, "user_id": picked["user_id"], "item_id": picked["item_id"], "event": event}
    for extra in ("creator_id", "category"):
        if extra in picked.column_names:
            cols[extra] = picked[extra]
    events = pa.table(cols)
    if options.ids == "int":
        _check_integer_ids(events, src, mapping)
    if options.rules:
        added = [_rule_rows(events, raw, rule, src) for rule in options.rules]
        meta["event_rules"] = [str(r) for r in options.rules]
        events = pa.concat_tables([events, *added])
    if constant:
        meta["constant_event"] = constant
    return events, meta


def _rule_rows(events: pa.Table, raw: pa.Table, rule: EventRule, source: str) -> pa.Table:
    """Copies of the rows matching ``rule`` (compared as numbers; missing values never match) as ``rule.event``,
    except rows that already are that event."""
    if rule.column not in raw.column_names:
        problem = f"missing column for the rule {rule} (have {raw.column_names})"
        raise LogValidationError(source, rule.column, raw.num_rows, problem)
    values = pl.Series(rule.column, raw[rule.column])
    if values.dtype == pl.Boolean:
        values = values.cast(pl.Float64)
    elif not values.dtype.is_numeric():
        text = values.cast(pl.String).str.strip_chars()
        values = text.cast(pl.Float64, strict=False)
        bad = values.is_null() & text.is_not_null() & (text != "")
        if bad.any():
            examples = text.filter(bad).unique(maintain_order=True).head(3).to_list()
            problem = f"values that are not numbers (e.g. {examples}) for the rule {rule}"
            raise LogValidationError(source, rule.column, int(bad.sum()), problem)
    match = pl.select(RULE_OPERATORS[rule.op](pl.lit(values), rule.threshold)).to_series().fill_null(False)
    match = match & (pl.Series(events["event"]) != rule.event)
    base = events.filter(match.to_arrow())
    return base.set_column(3, "event", pa.array([rule.event] * base.num_rows, pa.string()))


def _layout_hint(columns: list[str]) -> str | None:
    for name, signature in LAYOUT_SIGNATURES.items():
        if all(c in columns for c in signature):
            return f"the columns look like the {name} layout: add layout={name}"
    return None


def _check_integer_ids(events: pa.Table, source: str, mapping: Mapping[str, str]) -> None:
    """Ids given as text must be integers; otherwise an error that points at ``ids=codes``."""
    for col in ID_COLUMNS:
        if col not in events.column_names:
            continue
        if not (pa.types.is_string(events[col].type) or pa.types.is_large_string(events[col].type)):
            continue
        t = pl.Series(col, events[col]).str.strip_chars()
        bad = ~t.str.contains(r"^[+-]?\d+$").fill_null(True)
        if bad.any():
            examples = t.filter(bad).unique(maintain_order=True).head(3).to_list()
            raise LogValidationError(
                source, mapping.get(col, col), int(bad.sum()),
                f"ids that are not integers (e.g. {examples}); add ids=codes to number them",
            )


def _encode_ids(
    events: pa.Table, items: pa.Table | None, users: pa.Table | None
) -> tuple[pa.Table, pa.Table | None, pa.Table | None]:
    """Replace user, item and creator ids by their rank in the sorted distinct ids (as text) over all files."""
    tables = {"events": events, "items": items, "users": users}
    for col in ID_COLUMNS:
        present = [t[col] for t in tables.values() if t is not None and col in t.column_names]
        if not present:
            continue
        as_text = [pl.Series(col, c).cast(pl.String) for c in present]
        distinct = pl.concat(as_text).drop_nulls().unique().sort()
        codes = dict(zip(distinct.to_list(), range(len(distinct))))
        for name, t in tables.items():
            if t is not None and col in t.column_names:
                coded = pl.Series(col, t[col]).cast(pl.String).replace_strict(codes, default=None, return_dtype=pl.Int64)
                tables[name] = t.set_column(t.schema.get_field_index(col), col, coded.to_arrow())
    return tables["events"], tables["items"], tables["users"]


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
        if ours in cols:
            continue
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
    """Event values as strings, translated through ``ev_map`` (values not in it are kept); numeric values
    are matched to numeric keys as numbers (``4.0`` matches ``4``)."""
    s = pl.Series("event", values)
    if ev_map and all(re.fullmatch(NUMBER_PATTERN, k.strip()) for k in ev_map):
        if s.dtype.is_numeric():
            num = s.cast(pl.Float64)
        else:
            num = s.cast(pl.String).str.strip_chars().cast(pl.Float64, strict=False)
        if num.null_count() == s.null_count():
            by_number = {float(k): v for k, v in ev_map.items()}
            mapped = num.replace_strict(by_number, default=None, return_dtype=pl.String)
            return pa.chunked_array([mapped.fill_null(_as_text(s)).to_arrow()])
    ev = pc.cast(values, pa.string())
    if not ev_map:
        return ev
    keys = pa.array(list(ev_map), pa.string())
    idx = pc.index_in(ev, value_set=keys)
    mapped = pc.take(pa.array(list(ev_map.values()), pa.string()), idx)
    return pc.coalesce(mapped, ev)


def _as_text(s: pl.Series) -> pl.Series:
    return pl.Series(s.name, pc.cast(s.to_arrow(), pa.string()))


def _items_from_events(events: pa.Table, source: str, creator_group_size: int | None = None) -> pa.Table:
    """One row per item of the events: its creator, first event time and category."""
    if "creator_id" not in events.column_names:
        if creator_group_size is None:
            raise LogValidationError(
                source, "creator_id", events.num_rows,
                "missing column: without an items file the events need a creator column (map one with "
                "creator_id=<column>, or make creators up with creator_group_size=N)",
            )
        events = events.append_column("creator_id", pa.array(group_creators(events["item_id"], creator_group_size)))
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


def _read_items(src: SourceTable, items: pa.Table, events: pa.Table, options: TabularOptions) -> tuple[pa.Table, int]:
    """The items file under coldsim names, deriving a missing ``upload_ts`` from the (validated)
    events and a missing ``category`` as 0. Returns (items, number of items dropped for having no events)."""
    path = src.source
    n_dropped = 0
    if "creator_id" not in items.column_names:  # the fallback; ids checked first so creators are cut over int64 ids
        zeros = pa.array(np.zeros(items.num_rows, np.int64))
        ids_only = {"item_id": items["item_id"], "creator_id": zeros, "upload_ts": zeros, "category": zeros}
        validate_items(pa.table(ids_only), path)
        item_ids = pc.cast(items["item_id"], pa.int64())
        items = items.append_column("creator_id", pa.array(group_creators(item_ids, options.creator_group_size)))
    if "category" not in items.column_names:
        items = items.append_column("category", pa.array(np.zeros(items.num_rows, np.int64)))
    if "upload_ts" in items.column_names:
        raw = items["upload_ts"]
        ts = to_unix_seconds(raw, path, "upload_ts", options.ts_unit, options.ts_format)
        if options.ts_check:
            check_timestamps(ts, raw, src, "upload_ts", options.ts_unit)
        items = items.set_column(items.schema.get_field_index("upload_ts"), "upload_ts", ts)
    else:  # no upload time in the file: the item's first event; ids checked first so the join is on int64
        items = validate_items(items.append_column("upload_ts", pa.array(np.zeros(items.num_rows, np.int64))), path)
        first = events.group_by("item_id").aggregate([("ts", "min")]).rename_columns(["item_id", "upload_ts"])
        joined = items.drop_columns(["upload_ts"]).join(first, "item_id", join_type="inner")
        n_dropped = items.num_rows - joined.num_rows
        items = joined
    return validate_items(items, path), n_dropped
