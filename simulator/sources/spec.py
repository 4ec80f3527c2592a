"""Log specs (``KIND:PATH?key=value&...``): parsing, kind detection, and loading real logs through one registry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from simulator.core.schema import EVENT_TYPES, Log
from simulator.sources.datasets import DATASETS, resolve_log
from simulator.sources.kuairand import VIDEO_FILE
from simulator.sources.movielens import is_movielens, load_movielens
from simulator.sources.tabular import (
    MAPPABLE_COLUMNS,
    OPTION_KEYS,
    READERS,
    TabularOptions,
    apply_layout,
    load_tabular,
)

KINDS: tuple[str, ...] = ("movielens", "tabular", "kuairand", "synthetic")
"""Every kind of log source a spec may name."""


@dataclass(frozen=True)
class LogSpec:
    """Where a log comes from: a source ``kind`` (one of :data:`KINDS`), a ``path`` ('' for
    ``synthetic``) and the source's string ``options``."""

    kind: str
    path: str
    options: dict[str, str] = field(default_factory=dict)


def _is_kuairand(p: Path) -> bool:
    return (p / VIDEO_FILE).is_file() if p.is_dir() else p.name == VIDEO_FILE


def _is_tabular(p: Path) -> bool:
    return p.is_file() and any(p.name.lower().endswith(s) for s in READERS)


DETECTORS: tuple[tuple[str, Callable[[Path], bool]], ...] = (
    ("movielens", is_movielens),
    ("kuairand", _is_kuairand),
    ("tabular", _is_tabular),
)
"""Kind of a bare path: the first detector that accepts it wins."""


def parse_log_spec(spec: str) -> LogSpec:
    """Parse ``KIND:PATH[?key=value&key=value]`` or a bare ``PATH[?...]`` (kind detected from the path).

    ``synthetic`` needs no path (``synthetic`` or ``synthetic:?key=value``). Any other kind needs
    an existing path or the name of a dataset of :data:`~simulator.sources.datasets.DATASETS`
    (``movielens:ml-latest-small``, or a bare ``ml-latest-small`` for the dataset's default kind),
    which resolves to its cached copy, with the dataset's preset options under the spec's own (an
    existing path of that name wins). A prefix made of lower-case letters before the first ``:`` is
    read as a kind, so write a relative path containing ``:`` as ``./name``.
    """
    body, _, query = spec.strip().partition("?")
    options = _parse_options(query, spec)
    head, sep, rest = body.partition(":")
    if sep and head.isalpha() and head.islower():
        kind, path = head, rest
        if kind not in KINDS:
            raise ValueError(f"log spec {spec!r}: unknown kind {kind!r}; expected one of {list(KINDS)}")
    elif body == "synthetic":
        kind, path = "synthetic", ""
    else:
        kind, path = "", body
    if kind == "synthetic":
        return LogSpec("synthetic", path, options)
    if not path:
        raise ValueError(f"log spec {spec!r}: kind {kind!r} needs a path")
    if not Path(path).exists() and path in DATASETS:
        kind, resolved, preset = resolve_log(path, kind or None)
        return LogSpec(kind, str(resolved), preset | options)
    if not Path(path).exists():
        raise ValueError(
            f"log spec {spec!r}: path {path!r} does not exist (nor is it a dataset name: {sorted(DATASETS)})"
        )
    if not kind:
        kind = next((k for k, accepts in DETECTORS if accepts(Path(path))), "")
        if not kind:
            raise ValueError(
                f"log spec {spec!r}: cannot tell the kind of {path!r} (not a MovieLens directory or ratings file, a "
                f"KuaiRand directory or a {'/'.join(sorted(READERS))} file); write KIND:PATH with KIND one of {list(KINDS)}"
            )
    return LogSpec(kind, path, options)


def _parse_options(query: str, spec: str) -> dict[str, str]:
    options: dict[str, str] = {}
    for part in filter(None, query.split("&")):
        key, eq, value = part.partition("=")
        if not eq or not key:
            raise ValueError(f"log spec {spec!r}: option {part!r} is not key=value")
        if key in options:
            raise ValueError(f"log spec {spec!r}: option {key!r} given twice")
        options[key] = value
    return options


def _movielens_from_spec(spec: LogSpec) -> Log:
    _check_options(spec, {"creator_group_size"})
    size = spec.options.get("creator_group_size", "16")
    if not size.isdigit():
        raise ValueError(f"movielens option creator_group_size={size!r} is not a positive integer")
    return load_movielens(spec.path, creator_group_size=int(size))


RULE_KEYS: tuple[str, ...] = tuple(f"{event}_if" for event in EVENT_TYPES)
"""Spec keys of the tabular event rules (``like_if=rating>=4``)."""


def _tabular_from_spec(spec: LogSpec) -> Log:
    options = apply_layout(spec.options, spec.path)
    _check_options(LogSpec(spec.kind, spec.path, options), {"items", "users", *MAPPABLE_COLUMNS, *OPTION_KEYS, *RULE_KEYS},
                   prefix="event.")
    mapping = {k: v for k, v in options.items() if k in MAPPABLE_COLUMNS}
    event_mapping = {k.removeprefix("event."): v for k, v in options.items() if k.startswith("event.")}
    reading = TabularOptions.from_strings({k: v for k, v in options.items() if k in OPTION_KEYS or k in RULE_KEYS})
    return load_tabular(
        spec.path,
        items_path=options.get("items"),
        users_path=options.get("users"),
        mapping=mapping,
        event_mapping=event_mapping,
        options=reading,
    )


def _check_options(spec: LogSpec, allowed: set[str], prefix: str | None = None) -> None:
    unknown = sorted(k for k in spec.options if k not in allowed and not (prefix and k.startswith(prefix)))
    if unknown:
        extra = f" and {prefix}<name>" if prefix else ""
        raise ValueError(f"{spec.kind} log: unknown options {unknown}; allowed: {sorted(allowed)}{extra} (docs/sources.md)")


REAL_LOG_LOADERS: dict[str, Callable[[LogSpec], Log]] = {
    "movielens": _movielens_from_spec,
    "tabular": _tabular_from_spec,
}
"""Kind -> loader of a replayable real log; the only place that maps these names to code."""


def load_real_log(spec: LogSpec) -> Log:
    """Load the real log a spec names (``movielens`` or ``tabular``) through :data:`REAL_LOG_LOADERS`.

    ``kuairand`` (a catalogue without interactions) and ``synthetic`` are not replayable logs:
    they drive the synthetic platform, so asking for them here is a ``ValueError``.
    """
    loader = REAL_LOG_LOADERS.get(spec.kind)
    if loader is None:
        if spec.kind in KINDS:
            raise ValueError(
                f"log kind {spec.kind!r} is not a replayable real log: it drives the synthetic platform "
                f"(real logs: {sorted(REAL_LOG_LOADERS)})"
            )
        raise ValueError(f"unknown log kind {spec.kind!r}; expected one of {list(KINDS)}")
    if not Path(spec.path).exists():
        raise ValueError(f"{spec.kind} log: path {spec.path!r} does not exist")
    return loader(spec)
