"""What a run saves at the end of each day, and how a resume reads it back.

A checkpoint is one typed record (:class:`Checkpoint`) pickled to ``run_dir/checkpoints/day=NNNN.pkl``
(written to a temporary name, flushed to disk and renamed, so a crash never leaves half a file under a
checkpoint's name; the latest ``keep_last`` days are kept; a run writes it in a background thread,
:class:`CheckpointWriter`), plus each arm's exposures of every day as ``run_dir/exposures/<arm>/day=NNNN.parquet``.
The run directory is a :class:`~simulator.core.storage.Location`: a local directory or a URI on any filesystem
pyarrow reaches. The RNG needs no saving: every draw of the driver comes from a generator seeded by its position in
the run (``loop.rng_for``), so a resume may replay the days after the latest checkpoint and get the same numbers.
"""

from __future__ import annotations

import logging
import pickle
import time
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from simulator.core.storage import Location
from simulator.world.creators import CreatorState

logger = logging.getLogger(__name__)
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


def _day_of(path: Location) -> int:
    return int(path.name.split("=")[1].split(".")[0])


def _days(directory: Location, suffix: str) -> list[Location]:
    """The day files ``day=NNNN<suffix>`` of a directory, by day."""
    return sorted((p for p in directory.children() if p.name.startswith("day=") and p.name.endswith(suffix)),
                  key=_day_of)


def save_exposures(run_dir: Location | Path, arm: str, day: int, frames: list[pl.DataFrame]) -> None:
    """Write an arm's exposures of ``day`` (nothing when it had none)."""
    if frames:
        (Location.of(run_dir) / EXPOSURES / arm / f"{_day_name(day)}.parquet").write_table(pl.concat(frames).to_arrow())


def load_exposures(run_dir: Location | Path, arm: str, last_day: int) -> list[pl.DataFrame]:
    """An arm's saved exposures of days ``0..last_day``, one frame per day in day order."""
    paths = _days(Location.of(run_dir) / EXPOSURES / arm, ".parquet")
    return [pl.from_arrow(path.read_table()) for path in paths if _day_of(path) <= last_day]


def save_checkpoint(run_dir: Location | Path, checkpoint: Checkpoint, keep_last: int = 1) -> Location:
    """Pickle ``checkpoint`` atomically and delete all but the latest ``keep_last`` days' checkpoints; returns its
    location."""
    _check_keep_last(keep_last)
    return _write_checkpoint(Location.of(run_dir), checkpoint.day, _pickled(checkpoint), keep_last)


def _check_keep_last(keep_last: int) -> None:
    if keep_last < 1:
        raise ValueError(f"keep_last must be >= 1, got {keep_last}")


def _pickled(checkpoint: Checkpoint) -> bytes:
    return pickle.dumps(checkpoint, protocol=pickle.HIGHEST_PROTOCOL)


def _write_checkpoint(run_dir: Location, day: int, data: bytes, keep_last: int) -> Location:
    directory = run_dir / CHECKPOINTS
    directory.mkdir()
    path = directory / f"{_day_name(day)}.pkl"
    path.write_bytes_atomic(data)
    for old in _days(directory, ".pkl")[:-keep_last]:
        old.delete()
    return path


class CheckpointWriter:
    """Saves checkpoints as :func:`save_checkpoint` does, the writing off the run's critical path.

    :meth:`submit` pickles the checkpoint on the caller's thread (the run's state may change as soon as it returns:
    the bytes are a snapshot) and hands the bytes to one background thread, which writes them atomically, flushes
    them to disk and applies the retention while the run plays the next day. At most one write is in flight:
    :meth:`submit` and :meth:`wait` first wait for the previous one and raise its error (a disk that filled up
    stops the run at its next checkpoint rather than losing checkpoints silently). Whoever reads or deletes the
    checkpoints (a resume, a recovery in place, the end of a run) calls :meth:`wait` first."""

    def __init__(self) -> None:
        self._executor: ThreadPoolExecutor | None = None  # started by the first submit, ended by close
        self._pending: Future | None = None
        self.seconds = 0.0  # spent writing in the background thread (off the run's critical path)

    def submit(self, run_dir: Location | Path, checkpoint: Checkpoint, keep_last: int = 1) -> None:
        _check_keep_last(keep_last)
        data = _pickled(checkpoint)
        self.wait()
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="coldsim-checkpoint")
        self._pending = self._executor.submit(self._write, Location.of(run_dir), checkpoint.day, data, keep_last)

    def _write(self, *args) -> Location:
        start = time.perf_counter()
        try:
            return _write_checkpoint(*args)
        finally:
            self.seconds += time.perf_counter() - start

    def wait(self) -> Location | None:
        """Wait for the write in flight (re-raising its error); its location, or None when none was in flight."""
        pending, self._pending = self._pending, None
        return None if pending is None else pending.result()

    def close(self, quiet: bool = False) -> None:
        """Wait for the write in flight and end the thread. ``quiet``: log the write's error instead of raising it
        (when the run already fails with an error of its own, which is the one to see)."""
        try:
            self.wait()
        except Exception:
            if not quiet:
                raise
            logger.exception("the last checkpoint could not be written")
        finally:
            if self._executor is not None:
                self._executor.shutdown()
                self._executor = None

    @property
    def busy(self) -> bool:
        """Whether a write is in flight."""
        return self._pending is not None and not self._pending.done()


def remove_checkpoints(run_dir: Location | Path) -> None:
    """Delete the run's checkpoints (after a successful run; the exposures and the log stay)."""
    (Location.of(run_dir) / CHECKPOINTS).delete()


def has_checkpoint(run_dir: Location | Path) -> bool:
    """Whether the run directory holds a checkpoint file (readable or not: :func:`load_latest_checkpoint` says)."""
    directory = Location.of(run_dir) / CHECKPOINTS
    return directory.exists() and bool(_days(directory, ".pkl"))


def load_latest_checkpoint(run_dir: Location | Path) -> Checkpoint:
    """The newest readable checkpoint (a file that cannot be unpickled is skipped with a warning, and an older
    one is used); ``FileNotFoundError`` when there is none."""
    directory = Location.of(run_dir) / CHECKPOINTS
    paths = _days(directory, ".pkl")
    if not paths:
        raise FileNotFoundError(f"no checkpoint under {directory}")
    for path in reversed(paths):
        try:
            checkpoint = pickle.loads(path.read_bytes())
        except Exception as exc:  # truncated or corrupt: fall back to the day before
            warnings.warn(f"skipping unreadable checkpoint {path} ({type(exc).__name__}: {exc})", stacklevel=2)
            continue
        if not isinstance(checkpoint, Checkpoint):
            raise TypeError(f"{path} is a checkpoint of an older format ({type(checkpoint).__name__}); "
                            "rerun the scenario instead of resuming it")
        return checkpoint
    raise FileNotFoundError(f"no readable checkpoint under {directory} ({len(paths)} unreadable)")
