"""How to read a tabular log: ``TabularOptions`` (delimiter, header names, event rules, timestamps, ids, duplicates),
its spec keys, and the publishers' file layouts (``layout=NAME``)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from simulator.core.schema import EVENT_TYPES


NUMBER_PATTERN = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"
"""A decimal number as text (``12``, ``-3.5``, ``1e9``)."""


TS_UNITS: dict[str, int] = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}
"""``ts_unit`` -> ticks per second of a numeric timestamp column."""


SEPARATOR_NAMES: dict[str, str] = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|", "space": " "}
"""Names ``sep=`` accepts besides a single character."""


RULE_OPERATORS: dict[str, Callable[[pl.Expr, float], pl.Expr]] = {
    ">=": lambda c, v: c >= v,
    "<=": lambda c, v: c <= v,
    "==": lambda c, v: c == v,
    "!=": lambda c, v: c != v,
    ">": lambda c, v: c > v,
    "<": lambda c, v: c < v,
}
"""Comparison operators of an event rule (``=`` is read as ``==``)."""


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


LAYOUT_SIGNATURES: dict[str, tuple[str, ...]] = {
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
