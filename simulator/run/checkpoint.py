"""What a run saves at the end of each day, and how a resume reads it back.

A checkpoint is one typed record (:class:`Checkpoint`) pickled to ``run_dir/checkpoints/day=NNNN.pkl``
(written to a temporary name and renamed, so a crash never leaves half a file; only the latest day is kept),
plus each arm's exposures of the day as ``run_dir/exposures/<arm>/day=NNNN.parquet``. The RNG needs no saving:
every draw of the driver comes from a generator seeded by its position in the run (``loop.rng_for``).
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from simulator.world.creators import CreatorState

CHECKPOINTS = "checkpoints"
EXPOSURES = "exposures"


@dataclass
class ArmCheckpoint:
    """One arm's driver-side state: its creators' dynamics and the tables it built so far (exposures apart)."""

    dynamics: CreatorState
    uploads: list[pl.DataFrame]
    visits: list[pl.DataFrame]
    ats: list[np.ndarray]  # per published tick: seconds from each positive interaction to the weights that saw it


@dataclass
class Checkpoint:
    """Everything a resumed run needs to continue after ``day`` as if it had not stopped."""

    day: int
    world: dict[str, Any]  # World.state()
    runtime: dict[str, dict[str, bytes]]  # Runtime.snapshot(): the arms' policies and learners
    ready: dict[int, dict]  # tick -> collected weights waiting for their publish tick
    ats_actions: dict[int, dict[str, np.ndarray]]  # tick -> arm -> times of positive interactions
    n_events: int
    diagnostics: dict[str, list[dict[str, float]]]  # arm -> one row per day
    arms: dict[str, ArmCheckpoint]


def _day_name(day: int) -> str:
    return f"day={day:04d}"


def _day_of(path: Path) -> int:
    return int(path.name.split("=")[1].split(".")[0])


def save_exposures(run_dir: Path, arm: str, day: int, frames: list[pl.DataFrame]) -> None:
    """Write an arm's exposures of ``day`` (nothing when it had none)."""
    directory = run_dir / EXPOSURES / arm
    directory.mkdir(parents=True, exist_ok=True)
    if frames:
        pl.concat(frames).write_parquet(directory / f"{_day_name(day)}.parquet")


def load_exposures(run_dir: Path, arm: str, last_day: int) -> list[pl.DataFrame]:
    """An arm's saved exposures of days ``0..last_day``, one frame per day in day order."""
    paths = sorted((run_dir / EXPOSURES / arm).glob("day=*.parquet"))
    return [pl.read_parquet(path) for path in paths if _day_of(path) <= last_day]


def save_checkpoint(run_dir: Path, checkpoint: Checkpoint) -> Path:
    """Pickle ``checkpoint`` atomically and delete the older days' checkpoints; returns its path."""
    directory = run_dir / CHECKPOINTS
    directory.mkdir(exist_ok=True)
    path = directory / f"{_day_name(checkpoint.day)}.pkl"
    temporary = directory / f"{path.name}.tmp"
    with open(temporary, "wb") as file:
        pickle.dump(checkpoint, file, protocol=pickle.HIGHEST_PROTOCOL)
    temporary.rename(path)
    for old in directory.glob("day=*.pkl"):
        if old.name != path.name:
            old.unlink()
    return path


def load_latest_checkpoint(run_dir: Path) -> Checkpoint:
    """The checkpoint of the last completed day; ``FileNotFoundError`` when there is none."""
    paths = sorted((run_dir / CHECKPOINTS).glob("day=*.pkl"))
    if not paths:
        raise FileNotFoundError(f"no checkpoint under {run_dir / CHECKPOINTS}")
    with open(paths[-1], "rb") as file:
        checkpoint = pickle.load(file)
    if not isinstance(checkpoint, Checkpoint):
        raise TypeError(f"{paths[-1]} is a checkpoint of an older format ({type(checkpoint).__name__}); "
                        "rerun the scenario instead of resuming it")
    return checkpoint
