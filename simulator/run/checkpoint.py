"""What a run saves at the end of each day, and how a resume reads it back.

A checkpoint is one typed record (:class:`Checkpoint`) pickled to ``run_dir/checkpoints/day=NNNN.pkl``
(written to a temporary name, flushed to disk and renamed, so a crash never leaves half a file under a
checkpoint's name; the latest ``keep_last`` days are kept), plus each arm's exposures of every day as
``run_dir/exposures/<arm>/day=NNNN.parquet``. The RNG needs no saving: every draw of the driver comes from a
generator seeded by its position in the run (``loop.rng_for``), so a resume may replay the days after the
latest checkpoint and get the same numbers.
"""

from __future__ import annotations

import os
import pickle
import warnings
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


def save_checkpoint(run_dir: Path, checkpoint: Checkpoint, keep_last: int = 1) -> Path:
    """Pickle ``checkpoint`` atomically and delete all but the latest ``keep_last`` days' checkpoints; returns its
    path."""
    if keep_last < 1:
        raise ValueError(f"keep_last must be >= 1, got {keep_last}")
    directory = run_dir / CHECKPOINTS
    directory.mkdir(exist_ok=True)
    path = directory / f"{_day_name(checkpoint.day)}.pkl"
    temporary = directory / f"{path.name}.tmp"
    with open(temporary, "wb") as file:
        pickle.dump(checkpoint, file, protocol=pickle.HIGHEST_PROTOCOL)
        file.flush()
        os.fsync(file.fileno())  # the rename must not reach the disk before the data
    temporary.rename(path)
    for old in sorted(directory.glob("day=*.pkl"), key=_day_of)[:-keep_last]:
        old.unlink()
    return path


def remove_checkpoints(run_dir: Path) -> None:
    """Delete the run's checkpoints (after a successful run; the exposures and the log stay)."""
    directory = run_dir / CHECKPOINTS
    if directory.exists():
        for path in directory.iterdir():
            path.unlink()
        directory.rmdir()


def load_latest_checkpoint(run_dir: Path) -> Checkpoint:
    """The newest readable checkpoint (a file that cannot be unpickled is skipped with a warning, and an older
    one is used); ``FileNotFoundError`` when there is none."""
    paths = sorted((run_dir / CHECKPOINTS).glob("day=*.pkl"), key=_day_of)
    if not paths:
        raise FileNotFoundError(f"no checkpoint under {run_dir / CHECKPOINTS}")
    for path in reversed(paths):
        try:
            with open(path, "rb") as file:
                checkpoint = pickle.load(file)
        except Exception as exc:  # truncated or corrupt: fall back to the day before
            warnings.warn(f"skipping unreadable checkpoint {path} ({type(exc).__name__}: {exc})", stacklevel=2)
            continue
        if not isinstance(checkpoint, Checkpoint):
            raise TypeError(f"{path} is a checkpoint of an older format ({type(checkpoint).__name__}); "
                            "rerun the scenario instead of resuming it")
        return checkpoint
    raise FileNotFoundError(f"no readable checkpoint under {run_dir / CHECKPOINTS} ({len(paths)} unreadable)")
