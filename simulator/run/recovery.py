"""Playing a run's days, recovering in place when a part of the runtime loses the run's state.

A :class:`~simulator.run.runtime.ComponentLost` (an arm replica that died or came back blank, Train workers whose
learners are gone) sends every arm and learner back to the last checkpoint, and the days since are played again:
the same numbers, since every draw derives from the seed and the position in the run (docs/reliability.md).
"""

from __future__ import annotations

import logging
from typing import Callable

from simulator.run.checkpoint import has_checkpoint
from simulator.run.runtime import ComponentLost

logger = logging.getLogger(__name__)
MAX_RECOVERIES = 3  # recoveries in place in one run before it stops (a component that keeps dying)


def play(sim, on_tick: Callable[[], None] | None = None, on_day: Callable[[], None] | None = None) -> None:
    """The days of ``sim`` (a :class:`simulator.run.loop.Simulation`) from its ``start_day``, recovering in place when a part of the runtime loses the run's state (the
    progress bars then count the days played again twice)."""
    day = sim.start_day
    while day < sim.days:
        try:
            sim._day(day, on_tick=on_tick)
        except ComponentLost as lost:
            day = recover(sim, lost, day)
            continue
        if on_day is not None:
            on_day()
        day += 1


def recover(sim, lost: ComponentLost, day: int) -> int:
    """A part of the runtime lost the run's state during ``day``: every arm and learner goes back to the last
    checkpoint; returns the day to play next. With no checkpoint yet, or after :data:`MAX_RECOVERIES` recoveries,
    the run stops with the reason."""
    sim.writer.wait()  # the checkpoint in flight, if any, is the latest one
    if not sim.checkpoints or not has_checkpoint(sim.run_dir):
        raise RuntimeError(f"{lost}; the run stops instead of going on without it: there is no checkpoint to "
                           f"recover from yet (day {day}; checkpoints every {sim.scenario.checkpoint_every} "
                           "day(s)): run it again") from lost
    if sim.recoveries >= MAX_RECOVERIES:
        raise RuntimeError(f"{lost}; the run stops after {sim.recoveries} recoveries in place: resume it from its "
                           "last checkpoint (simulate --resume)") from lost
    sim.recoveries += 1
    logger.warning("%s during day %d: recovering in place from the last checkpoint (recovery %d of at most %d)",
                   lost, day, sim.recoveries, MAX_RECOVERIES)
    try:
        sim._collect_all()  # ticks still training would post stale results under the ids replayed next
    except ComponentLost:
        pass  # the trainer is gone with them
    sim.pending = []
    sim.runtime.recover()
    sim.train_stats = {name: {} for name in sim.arm_names}
    return sim.restore_latest()
