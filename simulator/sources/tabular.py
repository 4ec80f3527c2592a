"""Any parquet/csv/json-lines log with a column mapping and reading options, plus the table helpers of the other sources."""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from simulator.core.schema import (
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

TS_UNITS: dict[str, int] = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}
"""``ts_unit`` -> ticks per second of a numeric timestamp column."""

PLAUSIBLE_FIRST_TS = 631_152_000
"""1990-01-01T00:00:00Z: a real log's timestamps are not earlier (see :func:`check_timestamps`)."""

PLAUSIBLE_LAST_TS = 4_102_444_800
"""2100-01-01T00:00:00Z: a numeric timestamp later than this is in the wrong unit."""

SEPARATOR_NAMES: dict[str, str] = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|", "space": " "}
"""Names ``sep=`` accepts besides a single character."""

SNIFFED_SEPARATORS = ",\t;|"
"""Delimiters auto-detection chooses from (in this order of preference on a tie)."""

RULE_OPERATORS: dict[str, Callable[[pl.Expr, float], pl.Expr]] = {
    ">=": lambda c, v: c >= v,
    "<=": lambda c, v: c <= v,
    "==": lambda c, v: c == v,
    "!=": lambda c, v: c != v,
    ">": lambda c, v: c > v,
    "<": lambda c, v: c < v,
}
"""Comparison operators of an event rule (``=`` is read as ``==``)."""

ID_COLUMNS: tuple[str, ...] = ("user_id", "item_id", "creator_id")


class MalformedFileError(LogValidationError):
    """A file cannot be read as a table; the message names the file, the line (when known) and the problem."""

    def __init__(self, source: str, line: int | None, problem: str):
        self.source, self.column, self.n_rows, self.problem, self.line = source, None, 1, problem, line
        ValueError.__init__(self, f"{source} line {line}: {problem}" if line is not None else f"{source}: {problem}")

    def __reduce__(self):
        return (type(self), (self.source, self.line, self.problem))


@dataclass(frozen=True)
class EventRule:
    """Adds an ``event`` at the row's time for every row whose ``column`` ``op`` ``threshold`` (compared as
    numbers), e.g. ``like_if=rating>=4``."""

    event: str
    column: str
    op: str
    threshold: float

    @classmethod
    def parse(cls, event: str, text: str) -> EventRule:
        """``EventRule.parse("like", "rating>=4")``; a ``ValueError`` names what is wrong."""
        if event not in EVENT_TYPES:
            raise ValueError(f"{event}_if: {event!r} is not a coldsim event type {list(EVENT_TYPES)}")
        m = re.fullmatch(r"\s*(.+?)\s*(>=|<=|==|!=|>|<|=)\s*(\S+)\s*", text)
        if not m or not re.fullmatch(NUMBER_PATTERN, m.group(3)):
            raise ValueError(
                f"{event}_if={text!r}: expected COLUMN OP NUMBER with OP one of {list(RULE_OPERATORS)} (e.g. rating>=4)"
            )
        op = "==" if m.group(2) == "=" else m.group(2)
        return cls(event, m.group(1), op, float(m.group(3)))

    def __str__(self) -> str:
        return f"{self.event}_if={self.column}{self.op}{self.threshold:g}"


@dataclass(frozen=True)
class TabularOptions:
    """How to read a tabular log beyond the column mapping: everything else a ``tabular:PATH?key=value`` spec says.

    * ``sep``: the delimiter of csv/tsv files (``None``: detected from the content);
    * ``names``: the column names of a file without a header row;
    * ``encoding`` of text files (``utf-8``; ``latin-1`` for old files);
    * ``rules``: events added by numeric conditions on a column (``like_if=rating>=4``);
    * ``ts_unit`` of numeric timestamps (``s``, ``ms``, ``us``, ``ns``), ``ts_format`` a strftime layout
      for text timestamps, ``year``/``month``/``day`` columns to build the date from parts instead;
    * ``ts_check``: the plausibility checks of :func:`check_timestamps` (off for a relative clock);
    * ``ids``: ``int`` (ids must be integers) or ``codes`` (any ids, numbered in sorted order);
    * ``creator_group_size``: without a creator column, items in id order are cut into creators of this
      many items (:func:`group_creators`); ``None`` makes a missing creator column an error;
    * ``duplicates``: ``error`` or ``drop`` for repeated ``(ts, user_id, item_id, event)`` rows.
    """

    sep: str | None = None
    names: tuple[str, ...] | None = None
    encoding: str = "utf-8"
    rules: tuple[EventRule, ...] = ()
    ts_unit: str = "s"
    ts_format: str | None = None
    year: str | None = None
    month: str | None = None
    day: str | None = None
    ts_check: bool = True
    ids: str = "int"
    creator_group_size: int | None = None
    duplicates: str = "error"

    def __post_init__(self) -> None:
        if self.sep is not None and len(self.sep) != 1:
            raise ValueError(f"sep={self.sep!r}: one character or one of {sorted(SEPARATOR_NAMES)}")
        if self.ts_unit not in TS_UNITS:
            raise ValueError(f"ts_unit={self.ts_unit!r}: expected one of {list(TS_UNITS)}")
        if self.ids not in ("int", "codes"):
            raise ValueError(f"ids={self.ids!r}: expected 'int' or 'codes'")
        if self.duplicates not in ("error", "drop"):
            raise ValueError(f"duplicates={self.duplicates!r}: expected 'error' or 'drop'")
        if self.creator_group_size is not None and self.creator_group_size < 1:
            raise ValueError(f"creator_group_size must be >= 1, got {self.creator_group_size}")
        if (self.month or self.day) and not self.year:
            raise ValueError("month=/day= need year=COLUMN too (a date needs its year)")
        if self.names is not None and len(set(self.names)) != len(self.names):
            raise ValueError(f"names={','.join(self.names)}: repeated column names")

    @classmethod
    def from_strings(cls, options: Mapping[str, str]) -> TabularOptions:
        """Options from a spec's strings (keys :data:`OPTION_KEYS` and ``<event>_if``); unknown keys are an error."""
        kw: dict[str, object] = {}
        rules = []
        for key, value in options.items():
            if key.endswith("_if"):
                rules.append(EventRule.parse(key.removesuffix("_if"), value))
            elif key == "sep":
                kw["sep"] = SEPARATOR_NAMES.get(value.lower(), value)
            elif key == "names":
                kw["names"] = tuple(n.strip() for n in value.split(","))
            elif key == "ts_check":
                if value not in ("on", "off"):
                    raise ValueError(f"ts_check={value!r}: expected 'on' or 'off'")
                kw["ts_check"] = value == "on"
            elif key == "creator_group_size":
                if not value.isdigit():
                    raise ValueError(f"creator_group_size={value!r} is not a positive integer")
                kw["creator_group_size"] = int(value)
            elif key in OPTION_KEYS:
                kw[key] = value
            else:
                raise ValueError(f"unknown tabular option {key!r}; allowed: {sorted(OPTION_KEYS)} and <event>_if")
        rules.sort(key=lambda r: EVENT_TYPES.index(r.event))
        return cls(rules=tuple(rules), **kw)  # type: ignore[arg-type]


OPTION_KEYS: tuple[str, ...] = (
    "sep", "names", "encoding", "ts_unit", "ts_format", "year", "month", "day", "ts_check", "ids",
    "creator_group_size", "duplicates",
)
"""Spec keys of :class:`TabularOptions` (besides ``<event>_if`` rules)."""


LAYOUTS: dict[str, dict[str, str]] = {
    "amazon-json": {
        "user_id": "reviewerID", "item_id": "asin", "ts": "unixReviewTime", "event": "expose",
        "like_if": "overall>=4", "ids": "codes", "creator_group_size": "16", "duplicates": "drop",
    },
    "amazon-csv": {
        "names": "item,user,rating,timestamp", "user_id": "user", "item_id": "item", "ts": "timestamp",
        "event": "expose", "like_if": "rating>=4", "ids": "codes", "creator_group_size": "16", "duplicates": "drop",
    },
    "kuairand-log": {
        "ts": "time_ms", "ts_unit": "ms", "item_id": "video_id", "event": "expose", "view_if": "long_view>=1",
        "like_if": "is_like>=1", "comment_if": "is_comment>=1", "follow_if": "is_follow>=1",
        "share_if": "is_forward>=1", "items": "video_features_basic_pure.csv", "users": "user_features_pure.csv",
        "creator_id": "author_id",
        "duplicates": "drop",
    },
}
"""Publishers' file layouts as preset spec options (``layout=NAME``); the only place that knows them.

* ``amazon-json``: McAuley-lab Amazon reviews (5-core ``*_5.json.gz``, one JSON object per line);
* ``amazon-csv``: their ratings-only csv (no header: ``item,user,rating,timestamp``);
* ``kuairand-log``: a KuaiRand ``log_*.csv`` interaction log, items from ``video_features_basic_pure.csv``
  next to it (``items`` and ``users`` of a layout are relative to the events file's directory).
"""

_LAYOUT_SIGNATURES: dict[str, tuple[str, ...]] = {
    "amazon-json": ("reviewerID", "asin", "overall", "unixReviewTime"),
    "kuairand-log": ("user_id", "video_id", "time_ms", "is_like"),
}
"""Columns that identify a layout, for the hint of a missing-column error."""


def apply_layout(options: Mapping[str, str], events_path: str | Path) -> dict[str, str]:
    """``options`` with ``layout=NAME`` replaced by that layout's options (``options`` win over the layout's);
    a layout's relative ``items``/``users`` paths are resolved against ``events_path``'s directory."""
    options = dict(options)
    name = options.pop("layout", None)
    if name is None:
        return options
    if name not in LAYOUTS:
        raise ValueError(f"unknown layout {name!r}; expected one of {sorted(LAYOUTS)}")
    preset = dict(LAYOUTS[name])
    for key in ("items", "users"):
        if key in preset:
            preset[key] = str(Path(events_path).parent / preset[key])
    return preset | options


# ---------------------------------------------------------------- reading files


@dataclass(frozen=True)
class SourceTable:
    """A table read from a file, with what is needed to point at its rows: data row ``i`` is on line
    ``first_line + i`` of a text file (``first_line`` None: a parquet file, rows counted from 1)."""

    table: pa.Table
    source: str
    first_line: int | None

    def where(self, row: int) -> str:
        return f"line {self.first_line + row}" if self.first_line is not None else f"row {row + 1}"


def _open_binary(path: Path):
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")


def sniff_delimiter(sample: str, preferred: str = ",") -> str:
    """The delimiter of a csv sample, among :data:`SNIFFED_SEPARATORS`: the only one in the header line,
    else :class:`csv.Sniffer`'s choice, else one with the same count on every line; ``preferred`` if none."""
    lines = [line for line in sample.splitlines() if line.strip()][:50]
    if not lines:
        return preferred
    candidates = [c for c in SNIFFED_SEPARATORS if c in lines[0]]
    if len(candidates) <= 1:
        return candidates[0] if candidates else preferred
    try:
        found = csv.Sniffer().sniff("\n".join(lines), delimiters="".join(candidates)).delimiter
        if found in candidates:
            return found
    except csv.Error:
        pass
    consistent = [c for c in candidates if len({line.count(c) for line in lines}) == 1]
    pool = consistent or candidates
    return preferred if preferred in pool else pool[0]


def _sample(path: Path, encoding: str, n_bytes: int = 1 << 16) -> str:
    with _open_binary(path) as f:
        data = f.read(n_bytes)
    text = data.decode(encoding, errors="replace")
    return text if len(data) < n_bytes else text[: text.rfind("\n") + 1] or text


def _locate_text_problem(path: Path, sep: str, names: tuple[str, ...] | None, encoding: str) -> MalformedFileError | None:
    """The first line of a delimited file that cannot be decoded or has the wrong number of fields."""
    with _open_binary(path) as f:
        for number, raw in enumerate(f, start=1):
            try:
                raw.decode(encoding)
            except UnicodeDecodeError as exc:
                hint = " (set encoding=latin-1 if the file is Latin-1)" if encoding.lower().replace("_", "-") == "utf-8" else ""
                return MalformedFileError(str(path), number, f"not valid {encoding} text at byte {exc.start}{hint}")
    with _open_binary(path) as f:
        reader = csv.reader(io.TextIOWrapper(f, encoding=encoding, newline=""), delimiter=sep)
        expected = len(names) if names else None
        for row in reader:
            if not row:
                continue
            if expected is None:
                expected = len(row)
            elif len(row) != expected:
                return MalformedFileError(str(path), reader.line_num, f"expected {expected} columns, got {len(row)}")
    return None


def _read_delimited(path: Path, options: TabularOptions, preferred: str, as_text: bool = False) -> SourceTable:
    """A csv/tsv file through pyarrow (types inferred unless ``as_text``); a file pyarrow cannot read is
    scanned again for the first line at fault."""
    sep = options.sep or sniff_delimiter(_sample(path, options.encoding), preferred)
    names = list(options.names) if options.names else None
    read_opts = pacsv.ReadOptions(column_names=names, encoding=options.encoding)
    parse_opts = pacsv.ParseOptions(delimiter=sep)

    def read_all_as_text() -> pa.Table:
        header = pacsv.open_csv(path, read_options=read_opts, parse_options=parse_opts).schema.names
        text = pacsv.ConvertOptions(column_types={n: pa.string() for n in header})
        return pacsv.read_csv(path, read_options=read_opts, parse_options=parse_opts, convert_options=text)

    try:
        if as_text:
            table = read_all_as_text()
        else:
            try:
                table = pacsv.read_csv(path, read_options=read_opts, parse_options=parse_opts)
            except pa.ArrowInvalid as exc:  # a later block breaks the types inferred from the first one
                if "conversion error" not in str(exc):
                    raise
                table = read_all_as_text()
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        if "Empty CSV file" in str(exc):
            raise MalformedFileError(str(path), None, "empty file (no header row)") from None
        located = _locate_text_problem(path, sep, options.names, options.encoding)
        raise (located or MalformedFileError(str(path), None, f"cannot read as {sep!r}-separated text: {exc}")) from None
    if any(pa.types.is_binary(f.type) for f in table.schema):  # bytes that are not text in the encoding
        located = _locate_text_problem(path, sep, options.names, options.encoding)
        raise located or MalformedFileError(str(path), None, f"columns that are not {options.encoding} text")
    return SourceTable(table, str(path), 1 if names else 2)


def _json_column(values: list[object]) -> pa.Array:
    kinds = {type(v) for v in values if v is not None}
    if kinds <= {bool}:
        return pa.array(values, pa.bool_())
    if kinds <= {int}:
        return pa.array(values, pa.int64())
    if kinds <= {int, float}:
        return pa.array(values, pa.float64())
    return pa.array([None if v is None else v if isinstance(v, str) else json.dumps(v) for v in values], pa.string())


def _read_json_lines(path: Path, options: TabularOptions, preferred: str = "") -> SourceTable:
    """One JSON object per line; nested values (objects, lists) are dropped, mixed-type fields become text.
    Read by polars; when that fails, line by line to name the line at fault."""
    with _open_binary(path) as f:
        data = f.read()
    try:
        if options.encoding.lower().replace("_", "-") not in ("utf-8", "utf8"):
            data = data.decode(options.encoding).encode()
        df = pl.read_ndjson(io.BytesIO(data), infer_schema_length=None)
    except Exception:  # noqa: BLE001 - any failure: the slow reader names the line or reads what polars could not
        return _read_json_lines_slowly(path, options)
    if df.height == 0:
        raise MalformedFileError(str(path), None, "empty file (no JSON objects)")
    flat = [name for name, dtype in df.schema.items() if not isinstance(dtype, (pl.Struct, pl.List, pl.Array))]
    return SourceTable(df.select(flat).to_arrow(), str(path), 1)


def _read_json_lines_slowly(path: Path, options: TabularOptions) -> SourceTable:
    records: list[dict[str, object]] = []
    with _open_binary(path) as f:
        for number, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw.decode(options.encoding))
            except UnicodeDecodeError as exc:
                raise MalformedFileError(str(path), number, f"not valid {options.encoding} text at byte {exc.start}") from None
            except json.JSONDecodeError as exc:
                raise MalformedFileError(str(path), number, f"not valid JSON ({exc.msg} at column {exc.colno})") from None
            if not isinstance(obj, dict):
                raise MalformedFileError(str(path), number, f"expected a JSON object, got {type(obj).__name__}")
            records.append({k: v for k, v in obj.items() if not isinstance(v, (dict, list))})
    if not records:
        raise MalformedFileError(str(path), None, "empty file (no JSON objects)")
    keys = list(dict.fromkeys(k for r in records for k in r))
    return SourceTable(pa.table({k: _json_column([r.get(k) for r in records]) for k in keys}), str(path), 1)


def _read_parquet(path: Path, options: TabularOptions, preferred: str = "") -> SourceTable:
    return SourceTable(pq.read_table(path), str(path), None)


READERS: dict[str, tuple[Callable[[Path, TabularOptions, str], SourceTable], str]] = {
    ".csv": (_read_delimited, ","),
    ".csv.gz": (_read_delimited, ","),
    ".tsv": (_read_delimited, "\t"),
    ".tsv.gz": (_read_delimited, "\t"),
    ".json": (_read_json_lines, ""),
    ".jsonl": (_read_json_lines, ""),
    ".ndjson": (_read_json_lines, ""),
    ".json.gz": (_read_json_lines, ""),
    ".jsonl.gz": (_read_json_lines, ""),
    ".parquet": (_read_parquet, ""),
    ".pq": (_read_parquet, ""),
}
"""File-name suffix -> (reader, preferred delimiter); the only place that knows the supported table formats."""


def read_source(path: str | Path, options: TabularOptions | None = None) -> SourceTable:
    """Read a csv/tsv/json-lines/parquet file (reader chosen by extension, delimiter detected from the content)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    name = path.name.lower()
    for suffix, (reader, preferred) in sorted(READERS.items(), key=lambda kv: -len(kv[0])):
        if name.endswith(suffix):
            return reader(path, options or TabularOptions(), preferred)
    raise ValueError(f"{path}: unsupported table format; expected one of {sorted(READERS)}")


def read_table(path: str | Path, options: TabularOptions | None = None) -> pa.Table:
    """Read a csv/tsv/json-lines/parquet file into an arrow table (see :func:`read_source`)."""
    return read_source(path, options).table


def read_csv_text(path: str | Path, sep: str = ",", encoding: str = "utf-8") -> pl.DataFrame:
    """A quoted csv file with a header as all-string columns (empty fields stay ``""``); a malformed
    file raises :class:`MalformedFileError` naming the file and the line."""
    return pl.from_arrow(_read_delimited(Path(path), TabularOptions(sep=sep, encoding=encoding), sep, as_text=True).table)


def read_text_table(
    path: str | Path, sep: str, names: tuple[str, ...] | None = None, encoding: str = "utf-8"
) -> pl.DataFrame:
    """A quote-free delimited text file as all-string columns; ``sep`` may be several characters (``::``).

    Without ``names`` the first line is the header. Empty lines are skipped and empty fields are
    null; a line with the wrong number of fields raises :class:`MalformedFileError` naming the file
    and the line.
    """
    path = Path(path)
    with _open_binary(path) as f:
        data = f.read()
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise MalformedFileError(str(path), line, f"not valid {encoding} text (set the file's encoding)") from None
    lines = pl.Series("line", text.split("\n")).str.strip_suffix("\r")
    numbers = pl.Series("number", np.arange(1, len(lines) + 1))
    keep = lines.str.strip_chars().str.len_chars() > 0
    lines, numbers = lines.filter(keep), numbers.filter(keep)
    if names is None:
        if len(lines) == 0:
            raise MalformedFileError(str(path), None, "empty file (no header row)")
        names = tuple(lines[0].split(sep))
        lines, numbers = lines.slice(1), numbers.slice(1)
    n_fields = lines.str.count_matches(sep, literal=True) + 1
    bad = (n_fields != len(names)).arg_true()
    if len(bad):
        i = int(bad[0])
        problem = f"expected {len(names)} fields separated by {sep!r}, got {int(n_fields[i])}"
        raise MalformedFileError(str(path), int(numbers[i]), problem)
    if len(lines) == 0:
        return pl.DataFrame({n: pl.Series([], dtype=pl.String) for n in names})
    parts = lines.str.split_exact(sep, len(names) - 1).struct.unnest()
    return parts.rename(dict(zip(parts.columns, names))).with_columns(pl.all().replace("", None))


# ---------------------------------------------------------------- timestamps


def to_unix_seconds(
    values: pa.ChunkedArray | pa.Array, source: str, column: str, unit: str = "s", fmt: str | None = None
) -> pa.Array:
    """Integer unix seconds from numbers (in ``unit``: s, ms, us, ns), numeric strings, ISO-8601 strings
    (or strings in the strftime layout ``fmt``), dates or timestamps.

    Fractions of a second are floored; timestamps without a zone and strings without an offset are read as
    UTC. Nulls, NaN and unparsable values raise :class:`LogValidationError` naming how many rows.
    """
    s = pl.Series(column, values)
    n_null = s.null_count()
    if n_null:
        raise LogValidationError(source, column, n_null, "missing (null) timestamps")
    dtype = s.dtype
    per_second = TS_UNITS[unit]
    if dtype.is_integer():
        return (s.cast(pl.Int64) // per_second).to_arrow() if per_second > 1 else s.cast(pl.Int64).to_arrow()
    if dtype.is_float():
        bad = int((~s.is_finite()).sum())
        if bad:
            raise LogValidationError(source, column, bad, "NaN or infinite timestamps")
        return (s / per_second).floor().cast(pl.Int64).to_arrow()
    if dtype == pl.Date:
        return s.cast(pl.Datetime("us")).dt.epoch("s").to_arrow()
    if isinstance(dtype, pl.Datetime):
        return s.dt.epoch("s").to_arrow()
    if dtype != pl.String:
        raise LogValidationError(source, column, len(s), f"cannot read timestamps of type {dtype}")
    s = s.str.strip_chars()
    if fmt is None and bool(s.str.contains(NUMBER_PATTERN).all()):
        return to_unix_seconds(s.cast(pl.Float64).to_arrow(), source, column, unit)
    if fmt is not None:
        parsed = s.str.to_datetime(fmt, strict=False, time_zone="UTC").dt.epoch("s")
        expected = f"the layout {fmt!r}"
    else:
        iso = s.str.replace(r"^(\d{4}-\d{2}-\d{2})\s+", "${1}T")
        parsed = pl.select(
            pl.coalesce(
                [iso.str.to_datetime(f, strict=False, exact=True, time_zone="UTC").dt.epoch("s") for f in _ISO_FORMATS]
            )
        ).to_series()
        expected = "unix seconds or ISO-8601 (or give ts_format=)"
    n_bad = parsed.null_count()
    if n_bad:
        examples = s.filter(parsed.is_null()).unique(maintain_order=True).head(3).to_list()
        raise LogValidationError(source, column, n_bad, f"unparsable timestamps (e.g. {examples}); expected {expected}")
    return parsed.to_arrow()


def timestamps_from_parts(src: SourceTable, year: str, month: str | None, day: str | None) -> pa.Array:
    """Unix seconds of midnight (UTC) of the date in the ``year``/``month``/``day`` columns (missing month
    or day column: 1); non-integer parts and impossible dates raise :class:`LogValidationError` with lines."""
    parts: dict[str, pl.Series] = {}
    for role, name in (("year", year), ("month", month), ("day", day)):
        if name is None:
            parts[role] = pl.Series(role, np.ones(src.table.num_rows, np.int64))
            continue
        if name not in src.table.column_names:
            have = src.table.column_names
            raise LogValidationError(src.source, name, src.table.num_rows, f"missing column for {role}= (have {have})")
        raw = pl.Series(name, src.table[name])
        num = raw.cast(pl.String).str.strip_chars().cast(pl.Float64, strict=False)
        bad = (num.is_null() | (num != num.floor())).fill_null(True)
        if bad.any():
            idx = bad.arg_true().head(3).to_list()
            examples = ", ".join(f"{src.where(i)}: {raw[i]!r}" for i in idx)
            problem = f"{role} values that are not integers (e.g. {examples})"
            raise LogValidationError(src.source, name, int(bad.sum()), problem)
        parts[role] = num.cast(pl.Int64).alias(role)
    df = pl.DataFrame(list(parts.values()))
    text = pl.concat_str(
        [pl.col("year").cast(pl.String).str.zfill(4), pl.col("month").cast(pl.String).str.zfill(2),
         pl.col("day").cast(pl.String).str.zfill(2)],
        separator="-",
    )
    dates = df.select(text.str.to_date("%Y-%m-%d", strict=False).alias("date"))["date"]
    bad = dates.is_null()
    if bad.any():
        idx = bad.arg_true().head(3).to_list()
        examples = ", ".join(f"{src.where(i)}: {df['year'][i]}-{df['month'][i]}-{df['day'][i]}" for i in idx)
        cols = ",".join(c for c in (year, month, day) if c)
        raise LogValidationError(src.source, cols, int(bad.sum()), f"impossible dates (e.g. {examples})")
    return dates.cast(pl.Datetime("us")).dt.epoch("s").to_arrow()


def _utc(seconds: int) -> str:
    try:
        return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return "out of range"


def check_timestamps(seconds: pa.Array, raw: pa.ChunkedArray | pa.Array, src: SourceTable, column: str, unit: str) -> None:
    """Plausibility of timestamps read from a file column (``seconds``: the values as unix seconds).

    Errors (:class:`LogValidationError` naming the column and example lines): integers that are all
    calendar years (1900..2100) read as seconds; numbers later than 2100 (milliseconds or microseconds
    read as seconds: the message suggests ``ts_unit``); numbers that would be 1990..2100 as seconds but
    are read in a finer ``ts_unit``; some timestamps before 1990 among later ones (placeholders such as 0).
    A column entirely before 1990 is allowed as a relative clock, with a ``UserWarning``.
    """
    sec = np.asarray(seconds.to_numpy())
    if len(sec) == 0:
        return
    raw_s = pl.Series(column, raw)
    numeric = raw_s.dtype.is_numeric() or (
        raw_s.dtype == pl.String and bool(raw_s.str.strip_chars().str.contains(NUMBER_PATTERN).all())
    )
    values = raw_s.cast(pl.String).str.strip_chars().cast(pl.Float64, strict=False).to_numpy() if numeric else None

    def examples(mask: np.ndarray) -> str:
        idx = np.flatnonzero(mask)[:3]
        return ", ".join(f"{src.where(int(i))}: {raw_s[int(i)]} -> {_utc(int(sec[i]))}" for i in idx)

    def fail(mask: np.ndarray, problem: str) -> None:
        raise LogValidationError(src.source, column, int(mask.sum()), problem.replace("{examples}", examples(mask)))

    late = sec >= PLAUSIBLE_LAST_TS
    early = sec < PLAUSIBLE_FIRST_TS
    if numeric and values is not None:
        if unit == "s" and np.all((values >= 1900) & (values <= 2100) & (values == np.floor(values))):
            fail(np.ones(len(sec), bool), "values look like calendar years, not unix seconds (e.g. {examples}); "
                 f"build dates with year={column} (and month=/day= columns) instead of ts={column}")
        if late.any():
            ticks = float(np.median(values[late]))
            better = next((u for u, k in TS_UNITS.items() if PLAUSIBLE_FIRST_TS <= ticks / k < PLAUSIBLE_LAST_TS), None)
            hint = f"they look like {better}: set ts_unit={better}" if better else "check the column's unit (ts_unit=)"
            fail(late, f"timestamps after 2100 read in ts_unit={unit} (e.g. {{examples}}); {hint}")
        if unit != "s" and early.any():
            as_seconds = values[early]
            if np.all((as_seconds >= PLAUSIBLE_FIRST_TS) & (as_seconds < PLAUSIBLE_LAST_TS)):
                fail(early, f"values read in ts_unit={unit} fall before 1990 (e.g. {{examples}}) but are plausible "
                     "unix seconds: drop ts_unit or set ts_unit=s")
    if late.any():
        fail(late, "timestamps after 2100 (e.g. {examples})")
    if early.any() and not early.all():
        fail(early, "timestamps before 1990 among later ones (e.g. {examples}): placeholders (0?) or a mix of units")
    if early.all():
        warnings.warn(
            f"{src.source}: column '{column}': every timestamp is before 1990 (e.g. {examples(early)}); read as a "
            "relative clock in seconds. If they are not unix seconds, set ts_unit=, ts_format= or year=/month=/day= "
            "(ts_check=off silences this)",
            UserWarning,
            stacklevel=3,
        )


# ---------------------------------------------------------------- attributes and creators


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


# ---------------------------------------------------------------- loading


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
    for name, signature in _LAYOUT_SIGNATURES.items():
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
