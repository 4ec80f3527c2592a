"""Parameter sweeps: a scenario run over a grid of settings, each point a whole A/B run (or a group of replicates).

``--sweep world.creator_elasticity=0.2,0.5`` names a field of the scenario by its dotted path and the values to
try; several ``--sweep`` options make a grid (every combination). Each point is the scenario with those fields
set and every field validated again, so a wrong path or value fails before anything runs, naming it.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from typing import Any

import polars as pl

from simulator.core.config import Scenario


@dataclass(frozen=True)
class SweepAxis:
    """One swept field: its dotted path in the scenario and the values tried, in order."""

    path: str
    values: tuple[Any, ...]


def _value(text: str) -> Any:
    """A command-line value as JSON where it parses (numbers, true/false, null, lists), else the text itself."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _split(spec: str, option: str, form: str) -> tuple[str, str]:
    """``PATH=VALUES`` of a ``--sweep``/``--set`` option, each part stripped and non-empty."""
    path, sep, values = spec.partition("=")
    path, values = path.strip(), values.strip()
    if not sep or not path or not values:
        raise ValueError(f"{option} '{spec}': expected {form}")
    return path, values


def parse_sweep(spec: str) -> SweepAxis:
    """``'path=v1,v2,...'`` as a :class:`SweepAxis` (``ValueError`` naming what is wrong)."""
    path, values = _split(spec, "--sweep", "PATH=V1,V2,... (e.g. world.creator_elasticity=0.2,0.5)")
    parsed = tuple(_value(v.strip()) for v in values.split(","))
    if any(v == "" for v in parsed):
        raise ValueError(f"--sweep '{spec}': an empty value")
    if len(set(map(repr, parsed))) != len(parsed):
        raise ValueError(f"--sweep '{spec}': a value is given twice")
    return SweepAxis(path, parsed)


def parse_settings(specs: list[str]) -> dict[str, Any]:
    """``--set PATH=VALUE`` options as ``{path: value}`` (a value read as in :func:`parse_sweep`)."""
    settings: dict[str, Any] = {}
    for spec in specs:
        path, value = _split(spec, "--set", "PATH=VALUE (e.g. train.num_workers=2)")
        if path in settings:
            raise ValueError(f"--set: '{path}' is set twice")
        settings[path] = _value(value)
    return settings


def with_point(settings: dict[str, Any] | None, point: dict[str, Any]) -> dict[str, Any]:
    """A run's overrides: the ``--set`` settings, then a sweep point (a path in both is refused)."""
    both = sorted(set(settings or {}) & set(point))
    if both:
        raise ValueError(f"--sweep and --set both give {both}: sweep it or set it")
    return {**(settings or {}), **point}


def with_field(scenario: Scenario, path: str, value: Any) -> Scenario:
    """``scenario`` with the field at dotted ``path`` set to ``value``, validated again (``ValueError`` naming
    the path when it does not exist, pydantic's error when the value is invalid)."""
    data = scenario.model_dump()
    node, keys = data, path.split(".")
    for depth, key in enumerate(keys):
        if not isinstance(node, dict) or key not in node:
            where = ".".join(keys[:depth]) or "the scenario"
            known = sorted(node) if isinstance(node, dict) else []
            raise ValueError(f"--sweep: no field '{key}' in {where} (path '{path}'); known: {known}")
        if depth == len(keys) - 1:
            node[key] = value
        else:
            node = node[key]
    if keys[0] in ("name", "arms", "control", "scales", "protocol"):
        raise ValueError(f"--sweep: '{path}' changes what the scenario compares, not a setting; sweep a setting")
    if keys[0] in ("seed", "salt"):
        raise ValueError(f"--sweep: '{path}' is the randomisation; use --seed and --replicates N (each replicate "
                         "a new seed and salt)")
    return Scenario.model_validate(data)


def sweep_points(axes: list[SweepAxis]) -> list[dict[str, Any]]:
    """Every combination of the axes' values, in order (the first axis varies slowest); one empty point without
    axes."""
    paths = [axis.path for axis in axes]
    if len(set(paths)) != len(paths):
        raise ValueError(f"--sweep: a path is swept twice: {paths}")
    return [dict(zip(paths, combo)) for combo in itertools.product(*(axis.values for axis in axes))]


def apply_point(scenario: Scenario, point: dict[str, Any]) -> Scenario:
    for path, value in point.items():
        scenario = with_field(scenario, path, value)
    return scenario


def point_label(point: dict[str, Any]) -> str:
    return ",".join(f"{path}={value}" for path, value in point.items())


def sweep_table(points: list[dict[str, Any]], tables: list[pl.DataFrame]) -> pl.DataFrame:
    """One table of the points' lifts: ``point`` (its label), one column per swept path, then each point's
    lift table (a run's comparison or a replicate group's pooled lifts) as it is."""
    frames = []
    for point, table in zip(points, tables):
        columns = [pl.lit(point_label(point)).alias("point")]
        columns += [pl.lit(str(value)).alias(path) for path, value in point.items()]
        frames.append(table.select(*columns, pl.all()))
    return pl.concat(frames, how="vertical_relaxed")


def format_sweep_markdown(table: pl.DataFrame, lift: str) -> str:
    """The sweep's lifts as a markdown table: a row per point, metric and arm (``lift`` names the lift column:
    ``lift`` for single runs, ``mean_lift`` for replicate groups)."""
    lines = ["| point | metric | arm | lift [CI] |", "|---|---|---|---|"]
    for row in table.iter_rows(named=True):
        low, high = row.get("ci_low"), row.get("ci_high")
        interval = f" [{low:+.1%}, {high:+.1%}]" if low is not None and high is not None else ""
        value = row[lift]
        text = f"{value:+.1%}{interval}" if value is not None else "n/a"
        lines.append(f"| {row['point']} | {row['metric']} | {row['arm']} | {text} |")
    return "\n".join(lines) + "\n"
