"""Tests of simulator.run.checkpoint (the typed record, atomic write, retention, unreadable files skipped) and
simulator.run.timing."""

import logging
import pickle
import threading
import time

import numpy as np
import polars as pl
import pytest

import simulator.run.checkpoint as checkpoint_module
from simulator.core.storage import StorageError
from simulator.run.checkpoint import (ArmCheckpoint, Checkpoint, CheckpointWriter, load_exposures,
                                      load_latest_checkpoint, remove_checkpoints, save_checkpoint, save_exposures)
from simulator.run.timing import StageTimer


def _checkpoint(day: int) -> Checkpoint:
    arm = ArmCheckpoint(dynamics=None, uploads=[pl.DataFrame({"day": [day]})], visits=[], ats=[np.arange(3)])
    return Checkpoint(day=day, world={"next": 10 + day}, runtime={"policies": {}, "learners": {}}, ready={},
                      ats_actions={}, n_events=100 * day, diagnostics={"a": [{"day": float(day)}]}, arms={"a": arm})


def test_latest_checkpoint_round_trips_and_replaces_the_older_ones(tmp_path):
    for day in range(3):
        path = save_checkpoint(tmp_path, _checkpoint(day))
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == [path.name] == ["day=0002.pkl"]
    got = load_latest_checkpoint(tmp_path)
    assert (got.day, got.n_events, got.world) == (2, 200, {"next": 12})
    assert got.arms["a"].uploads[0]["day"].to_list() == [2] and got.arms["a"].ats[0].tolist() == [0, 1, 2]


def test_missing_or_old_format_checkpoints_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_latest_checkpoint(tmp_path)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "day=0000.pkl").write_bytes(pickle.dumps({"day": 0}))
    with pytest.raises(TypeError, match="older format"):
        load_latest_checkpoint(tmp_path)


def test_keep_last_keeps_the_latest_days_and_remove_deletes_them_all(tmp_path):
    for day in [0, 1, 9, 10]:  # day 10 sorts after day 9 by number, not only by name
        save_checkpoint(tmp_path, _checkpoint(day), keep_last=2)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["day=0009.pkl", "day=0010.pkl"]
    with pytest.raises(ValueError, match="keep_last"):
        save_checkpoint(tmp_path, _checkpoint(11), keep_last=0)
    remove_checkpoints(tmp_path)
    assert not (tmp_path / "checkpoints").exists()
    remove_checkpoints(tmp_path)  # nothing to remove: no error


@pytest.fixture
def gated_writes(monkeypatch):
    """The background writes wait until the test opens the gate."""
    gate, write = threading.Event(), checkpoint_module._write_checkpoint

    def gated(*args):
        assert gate.wait(10), "the test never opened the gate"
        return write(*args)

    monkeypatch.setattr(checkpoint_module, "_write_checkpoint", gated)
    return gate


def test_the_writer_returns_before_the_write_and_saves_the_state_as_it_was_at_submit(tmp_path, gated_writes):
    writer, checkpoint = CheckpointWriter(), _checkpoint(4)
    writer.submit(tmp_path, checkpoint, keep_last=1)
    assert writer.busy and not (tmp_path / "checkpoints" / "day=0004.pkl").exists()  # the run goes on meanwhile
    checkpoint.diagnostics["a"].append({"day": 5.0})  # the next day changes the run's state
    checkpoint.arms["a"].uploads.append(pl.DataFrame({"day": [5]}))
    gated_writes.set()
    assert writer.wait().name == "day=0004.pkl" and not writer.busy
    got = load_latest_checkpoint(tmp_path)
    assert got.diagnostics == {"a": [{"day": 4.0}]} and len(got.arms["a"].uploads) == 1
    assert writer.wait() is None  # nothing in flight
    writer.close()


def test_the_writer_keeps_one_write_in_flight_and_applies_the_retention(tmp_path):
    writer = CheckpointWriter()
    for day in [0, 1, 9, 10]:
        writer.submit(tmp_path, _checkpoint(day), keep_last=2)
    writer.close()
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["day=0009.pkl", "day=0010.pkl"]
    assert writer.seconds > 0  # the writing time, reported beside the driver's stages
    with pytest.raises(ValueError, match="keep_last"):
        writer.submit(tmp_path, _checkpoint(11), keep_last=0)


def test_a_failed_background_write_is_raised_at_the_next_wait_or_logged_when_the_run_already_failed(
        tmp_path, monkeypatch, caplog):
    def full_disk(location, day, data, keep_last):
        raise StorageError(28, f"cannot write {location.uri}: no space left on device")

    monkeypatch.setattr(checkpoint_module, "_write_checkpoint", full_disk)
    writer = CheckpointWriter()
    writer.submit(tmp_path, _checkpoint(0))
    with pytest.raises(StorageError, match="no space left"):
        writer.submit(tmp_path, _checkpoint(1))  # the run stops at its next checkpoint, not silently
    writer.submit(tmp_path, _checkpoint(2))  # the error was raised once; this write fails too
    with caplog.at_level(logging.ERROR, logger="simulator.run.checkpoint"):
        writer.close(quiet=True)
    assert "could not be written" in caplog.text and "no space left" in caplog.text


def test_partial_or_corrupt_checkpoints_are_never_taken_as_the_latest(tmp_path):
    for day in range(2):
        save_checkpoint(tmp_path, _checkpoint(day), keep_last=2)
    directory = tmp_path / "checkpoints"
    good = (directory / "day=0001.pkl").read_bytes()
    (directory / "day=0003.pkl.tmp").write_bytes(good[: len(good) // 2])  # a write cut short: never a candidate
    (directory / "day=0002.pkl").write_bytes(good[: len(good) // 2])  # truncated under a checkpoint's name
    with pytest.warns(UserWarning, match="skipping unreadable checkpoint .*day=0002"):
        assert load_latest_checkpoint(tmp_path).day == 1
    for path in directory.glob("day=*.pkl"):
        path.write_bytes(b"not a pickle")
    with pytest.warns(UserWarning), pytest.raises(FileNotFoundError, match="no readable checkpoint"):
        load_latest_checkpoint(tmp_path)


def test_exposures_are_saved_per_day_and_read_back_up_to_a_day(tmp_path):
    for day in range(3):
        save_exposures(tmp_path, "a", day, [pl.DataFrame({"day": [day, day]})])
    save_exposures(tmp_path, "a", 3, [])  # a day without exposures writes nothing
    frames = load_exposures(tmp_path, "a", last_day=1)
    assert [frame["day"].to_list() for frame in frames] == [[0, 0], [1, 1]]
    assert len(load_exposures(tmp_path, "a", last_day=9)) == 3 and load_exposures(tmp_path, "b", 9) == []


def test_stage_timer_adds_up_each_stage_in_the_order_stages_first_end():
    timer = StageTimer()
    with timer("serve"):
        time.sleep(0.01)
    with timer("world"):
        pass
    with timer("serve"):
        time.sleep(0.01)
    assert list(timer.seconds) == ["serve", "world"] and timer.seconds["serve"] >= 0.02
    with pytest.raises(RuntimeError), timer("train"):
        raise RuntimeError("a failed stage still counts")
    assert "train" in timer.seconds
