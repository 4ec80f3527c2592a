"""Log specs (``KIND:PATH?key=value&...``): parsing, and :data:`LOG_KINDS`, the one registry of log kinds."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from simulator.core.config import SyntheticConfig
from simulator.core.schema import EVENT_TYPES, Log
from simulator.sources.datasets import DATASETS, resolve_log
from simulator.sources.kuairand import USER_FILE, VIDEO_FILE, load_kuairand_catalogue, load_kuairand_users
from simulator.sources.movielens import is_movielens, load_movielens
from simulator.sources.table_files import READERS
from simulator.sources.tabular import MAPPABLE_COLUMNS, load_tabular
from simulator.sources.tabular_options import OPTION_KEYS, TabularOptions, apply_layout


@dataclass(frozen=True)
class LogSpec:
    """Where a log comes from: a source ``kind`` (one of :data:`KINDS`), a ``path`` ('' for
    ``synthetic``) and the source's string ``options``."""

    kind: str
    path: str
    options: dict[str, str] = field(default_factory=dict)


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
        kind = next((name for name, kind in LOG_KINDS.items() if kind.detect is not None and kind.detect(Path(path))), "")
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


def _check_options(spec: LogSpec, allowed: set[str], prefix: str | None = None) -> None:
    unknown = sorted(k for k in spec.options if k not in allowed and not (prefix and k.startswith(prefix)))
    if unknown:
        extra = f" and {prefix}<name>" if prefix else ""
        raise ValueError(f"{spec.kind} log: unknown options {unknown}; allowed: {sorted(allowed)}{extra} (docs/sources.md)")


def synthetic_config(base: SyntheticConfig, options: dict[str, str]) -> SyntheticConfig:
    """``base`` (a scenario's synthetic platform) with ``synthetic:?n_users=5000&days=7``-style overrides, validated."""
    data = base.model_dump()
    unknown = sorted(set(options) - set(data))
    if unknown:
        raise ValueError(f"synthetic platform: unknown options {unknown}; allowed: {sorted(data)}")
    data.update(options)
    return SyntheticConfig.model_validate(data)


# ---------------------------------------------------------------- the loaders of each kind


def _load_movielens(spec: LogSpec, synthetic: SyntheticConfig, seed: int) -> Log:
    _check_options(spec, {"creator_group_size"})
    size = spec.options.get("creator_group_size", "16")
    if not size.isdigit():
        raise ValueError(f"movielens option creator_group_size={size!r} is not a positive integer")
    return load_movielens(spec.path, creator_group_size=int(size))


RULE_KEYS: tuple[str, ...] = tuple(f"{event}_if" for event in EVENT_TYPES)
"""Spec keys of the tabular event rules (``like_if=rating>=4``)."""


def _load_tabular(spec: LogSpec, synthetic: SyntheticConfig, seed: int) -> Log:
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


def _load_kuairand(spec: LogSpec, synthetic: SyntheticConfig, seed: int) -> Log:
    """KuaiRand-Pure's real video->author catalogue (and users' activity levels) driving the synthetic platform."""
    from simulator.sources.synthetic import generate_synthetic

    root = Path(spec.path)
    catalogue = load_kuairand_catalogue(root)
    users_file = (root if root.is_dir() else root.parent) / USER_FILE
    activity = load_kuairand_users(users_file)["activity"].to_numpy() if users_file.exists() else None
    return generate_synthetic(synthetic_config(synthetic, spec.options), seed, catalogue=catalogue,
                              user_activity=activity)


def _load_synthetic(spec: LogSpec, synthetic: SyntheticConfig, seed: int) -> Log:
    from simulator.sources.synthetic import generate_synthetic

    return generate_synthetic(synthetic_config(synthetic, spec.options), seed)


def _is_kuairand(path: Path) -> bool:
    return (path / VIDEO_FILE).is_file() if path.is_dir() else path.name == VIDEO_FILE


def _is_tabular(path: Path) -> bool:
    return path.is_file() and any(path.name.lower().endswith(suffix) for suffix in READERS)


@dataclass(frozen=True)
class LogKind:
    """A kind of log source: how a spec of it loads, whether it is a real log to replay, how a bare path is
    recognised as one."""

    load: Callable[[LogSpec, SyntheticConfig, int], Log]  # (spec, the scenario's synthetic platform, seed) -> log
    replayable: bool  # a real log of interactions (an A/B run replays a window of it), not a driver of the platform
    detect: Callable[[Path], bool] | None = None  # does a bare path hold this kind (None: never detected)
    label: str = ""  # what plan_run calls the source


LOG_KINDS: dict[str, LogKind] = {
    "movielens": LogKind(_load_movielens, replayable=True, detect=is_movielens, label="MovieLens log"),
    "kuairand": LogKind(_load_kuairand, replayable=False, detect=_is_kuairand, label="KuaiRand catalogue"),
    "tabular": LogKind(_load_tabular, replayable=True, detect=_is_tabular, label="tabular log"),
    "synthetic": LogKind(_load_synthetic, replayable=False),
}
"""Kind name -> :class:`LogKind`: the only place that maps these names to code. A bare path gets the first kind,
in this order, whose ``detect`` accepts it."""

KINDS: tuple[str, ...] = tuple(LOG_KINDS)
"""Every kind of log source a spec may name."""


def load_spec(spec: LogSpec, synthetic: SyntheticConfig, seed: int) -> Log:
    """The log a spec names: a real log, or the synthetic platform (``synthetic`` the scenario's, with the spec's
    overrides; ``seed`` the run's) alone or driven by a real catalogue."""
    if spec.kind not in LOG_KINDS:
        raise ValueError(f"unknown log kind {spec.kind!r}; expected one of {list(KINDS)}")
    return LOG_KINDS[spec.kind].load(spec, synthetic, seed)


def load_real_log(spec: LogSpec) -> Log:
    """Load the real log a spec names (a :data:`LOG_KINDS` kind with ``replayable``: ``movielens``, ``tabular``).

    ``kuairand`` (a catalogue without interactions) and ``synthetic`` are not replayable logs:
    they drive the synthetic platform, so asking for them here is a ``ValueError``.
    """
    kind = LOG_KINDS.get(spec.kind)
    if kind is None:
        raise ValueError(f"unknown log kind {spec.kind!r}; expected one of {list(KINDS)}")
    if not kind.replayable:
        real = sorted(name for name, other in LOG_KINDS.items() if other.replayable)
        raise ValueError(f"log kind {spec.kind!r} is not a replayable real log: it drives the synthetic platform "
                         f"(real logs: {real})")
    if not Path(spec.path).exists():
        raise ValueError(f"{spec.kind} log: path {spec.path!r} does not exist")
    return kind.load(spec, SyntheticConfig(), 0)
