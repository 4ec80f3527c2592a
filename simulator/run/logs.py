"""The run's log: what a ``--log`` spec names (:data:`simulator.sources.spec.LOG_KINDS`), an A/B run's window of it,
and the warnings that make its read-out doubtful."""

from __future__ import annotations

import warnings

from simulator.core.config import Scenario
from simulator.core.schema import Log
from simulator.core.window import ColdsimWarning, choose_window, iso_day, log_warnings
from simulator.sources.spec import LOG_KINDS, load_spec, parse_log_spec, synthetic_config


def load_log(spec: str | None, scenario: Scenario) -> Log:
    """The run's log: the synthetic platform by default, a KuaiRand catalogue driving it, or a real log."""
    return load_spec(parse_log_spec(spec or "synthetic"), scenario.synthetic, scenario.seed)


def check_start(kind: str, start: str | None) -> None:
    """``--start`` picks the window of a real log: a ``ValueError`` for a kind that drives the synthetic platform."""
    if start is not None and not LOG_KINDS[kind].replayable:
        raise ValueError(f"--start picks the window of a real log; the {kind} platform starts at its own day 0")


def load_ab_log(spec: str | None, start: str | None, scenario: Scenario) -> tuple[Log, list[str]]:
    """An A/B run's log: a real log cut to its window (``start``, else the densest; ``simulator.core.window``),
    and the warnings that make its read-out doubtful (sparse days, no interactions, too few units per arm)."""
    kind = parse_log_spec(spec or "synthetic").kind
    check_start(kind, start)
    log = load_log(spec, scenario)
    if LOG_KINDS[kind].replayable:
        log = choose_window(log, scenario.days, start)
    return log, log_warnings(log, min(scenario.days, log.n_days), [arm.share for arm in scenario.arms])


def describe_log(spec: str | None, start: str | None, scenario: Scenario) -> str:
    """One line on the log a run would use, after checking it as the run would: a synthetic platform's sizes (its
    overrides validated), or a real log read in full (a malformed file fails here, not an hour into a run) with its
    size, days, replayed window and the warnings about it."""
    parsed = parse_log_spec(spec or "synthetic")
    kind = LOG_KINDS[parsed.kind]
    if not kind.replayable:
        check_start(parsed.kind, start)
        synthetic = synthetic_config(scenario.synthetic, parsed.options)
        text = (f"synthetic platform: {synthetic.n_users:,} users, {synthetic.n_creators:,} creators, "
                f"{synthetic.days} days, {synthetic.slots_per_upload:,.0f} slots per upload")
        return text + (f", {kind.label} {parsed.path}" if kind.label else "")  # a real catalogue driving it
    if scenario.protocol == "ab":
        log, problems = load_ab_log(spec, start, scenario)
    else:
        log, problems = load_log(spec, scenario), []
    text = (f"{parsed.kind} log {parsed.path}: {log.events.num_rows:,} events, {log.items.num_rows:,} items, "
            f"{log.n_days} days from {iso_day(log.t0)}" + (f"; replays {log.meta['window']}" if "window" in log.meta else ""))
    return text + "".join(f"\n  warning: {problem}" for problem in problems)


def warn(messages: list[str]) -> None:
    """Each message as a :class:`~simulator.core.window.ColdsimWarning` (the CLI prints them every time)."""
    for message in messages:
        warnings.warn(message, ColdsimWarning, stacklevel=3)
