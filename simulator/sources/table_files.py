"""Reading a table from a parquet, csv/tsv or json-lines file (gzipped or not), with errors that name the file and line."""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from simulator.core.schema import LogValidationError
from simulator.sources.tabular_options import TabularOptions


SNIFFED_SEPARATORS = ",\t;|"
"""Delimiters auto-detection chooses from (in this order of preference on a tie)."""


class MalformedFileError(LogValidationError):
    """A file cannot be read as a table; the message names the file, the line (when known) and the problem."""

    def __init__(self, source: str, line: int | None, problem: str):
        self.source, self.column, self.n_rows, self.problem, self.line = source, None, 1, problem, line
        ValueError.__init__(self, f"{source} line {line}: {problem}" if line is not None else f"{source}: {problem}")

    def __reduce__(self):
        return (type(self), (self.source, self.line, self.problem))


@dataclass(frozen=True)
class SourceTable:
    """A table read from a file, with what is needed to point at its rows: data row ``i`` is on line
    ``first_line + i`` of a text file (``first_line`` None: a parquet file, rows counted from 1)."""

    table: pa.Table
    source: str
    first_line: int | None

    def where(self, row: int) -> str:
        return f"line {self.first_line + row}" if self.first_line is not None else f"row {row + 1}"


def open_binary(path: Path):
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
    with open_binary(path) as f:
        data = f.read(n_bytes)
    text = data.decode(encoding, errors="replace")
    return text if len(data) < n_bytes else text[: text.rfind("\n") + 1] or text


def _locate_text_problem(path: Path, sep: str, names: tuple[str, ...] | None, encoding: str) -> MalformedFileError | None:
    """The first line of a delimited file that cannot be decoded or has the wrong number of fields."""
    with open_binary(path) as f:
        for number, raw in enumerate(f, start=1):
            try:
                raw.decode(encoding)
            except UnicodeDecodeError as exc:
                hint = " (set encoding=latin-1 if the file is Latin-1)" if encoding.lower().replace("_", "-") == "utf-8" else ""
                return MalformedFileError(str(path), number, f"not valid {encoding} text at byte {exc.start}{hint}")
    with open_binary(path) as f:
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


def read_delimited(path: Path, options: TabularOptions, preferred: str, as_text: bool = False) -> SourceTable:
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
    with open_binary(path) as f:
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
    with open_binary(path) as f:
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
    ".csv": (read_delimited, ","),
    ".csv.gz": (read_delimited, ","),
    ".tsv": (read_delimited, "\t"),
    ".tsv.gz": (read_delimited, "\t"),
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
    return pl.from_arrow(read_delimited(Path(path), TabularOptions(sep=sep, encoding=encoding), sep, as_text=True).table)


def read_text_table(
    path: str | Path, sep: str, names: tuple[str, ...] | None = None, encoding: str = "utf-8"
) -> pl.DataFrame:
    """A quote-free delimited text file as all-string columns; ``sep`` may be several characters (``::``).

    Without ``names`` the first line is the header. Empty lines are skipped and empty fields are
    null; a line with the wrong number of fields raises :class:`MalformedFileError` naming the file
    and the line.
    """
    path = Path(path)
    with open_binary(path) as f:
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
