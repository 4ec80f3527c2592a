"""Run storage on any pyarrow filesystem (simulator.core.storage): the Location operations, and a whole run with
a resume whose files never touch the local-disk code path."""

import pickle

import polars as pl
import pyarrow as pa
import pyarrow.fs as pafs
import pytest

from scenarios import get_scenario
from simulator.core.storage import Location
from simulator.run.checkpoint import load_latest_checkpoint
from simulator.run.loop import Simulation
from simulator.run.runtime import LocalRuntime
from simulator.sources.synthetic import generate_synthetic


def _remote(tmp_path) -> Location:
    """A filesystem that is not LocalFileSystem (so every write takes the object-store path: streams and moves)."""
    fs = pafs.SubTreeFileSystem(str(tmp_path), pafs.LocalFileSystem())
    return Location(fs, "/store", "subtree:///store")


def test_local_paths_and_uris():
    local = Location.of("some/dir")
    assert local.local and local.path.endswith("/some/dir") and local.path.startswith("/")
    assert (local / "a" / "b.pkl").name == "b.pkl"
    uri = Location.of("file:///tmp/x/")
    assert uri.local and uri.path == "/tmp/x" and uri.uri == "file:///tmp/x"
    with pytest.raises(ValueError, match="not a filesystem pyarrow can open"):
        Location.of("nosuchscheme://bucket/key")


def test_files_on_a_non_local_filesystem(tmp_path):
    root = _remote(tmp_path)
    assert not root.local and not root.exists() and root.children() == []
    (root / "d").mkdir()
    (root / "d" / "x.pkl").write_bytes_atomic(pickle.dumps({"a": 1}))
    assert pickle.loads((root / "d" / "x.pkl").read_bytes()) == {"a": 1}
    assert [c.name for c in (root / "d").children()] == ["x.pkl"]  # no temporary file left behind
    table = pa.table({"x": [1, 2, 3]})
    (root / "t" / "part-0.parquet").write_table(table)
    assert (root / "t").read_table().equals(table)
    assert root.size() == (root / "d" / "x.pkl").size() + (root / "t" / "part-0.parquet").size() > 0
    (root / "d").delete()
    assert not (root / "d").exists()
    (root / "d").delete()  # deleting what is not there is a no-op
    assert (tmp_path / "store" / "t" / "part-0.parquet").exists()  # really written through the filesystem


def test_a_run_and_its_resume_on_a_non_local_filesystem_equal_a_local_run(tmp_path):
    scenario = get_scenario("boost_ab").at_scale("tiny").with_overrides(days=2)
    scenario = scenario.model_copy(update={"checkpoint_every": 1})
    log = generate_synthetic(scenario.synthetic, seed=scenario.seed)
    local = Simulation(scenario, log, LocalRuntime, tmp_path / "local", progress=False).run()
    root = _remote(tmp_path) / "run"
    first = Simulation(scenario, log, LocalRuntime, root, progress=False)
    first.days = 1  # stopped after day 0, as an interrupted run
    first.run()
    assert load_latest_checkpoint(root).day == 0
    assert [c.name for c in (root / "exposures").children()] == sorted(a.name for a in scenario.arms)
    resumed = Simulation(scenario, log, LocalRuntime, root, progress=False)
    assert resumed.restore_latest() == 1
    result = resumed.run()
    assert result.run_dir == "subtree:///store/run"
    assert result.overall == local.overall
    for arm in local.daily:
        assert result.daily[arm].equals(local.daily[arm]), arm
    assert not (tmp_path / "store" / "run" / "checkpoints" / "day=0000.pkl.tmp").exists()
    assert pl.from_arrow((root / "exposures" / scenario.arms[0].name / "day=0000.parquet").read_table()).height > 0


def test_a_full_disk_names_the_path_and_leaves_the_last_checkpoint_as_the_latest(tmp_path, monkeypatch):
    """A write that fails (here: the disk fills during the checkpoint's write) raises a StorageError naming the
    path, the cause and the bytes needed; its partial file is gone and the previous checkpoint is still the
    latest, so the run can be resumed once there is space."""
    import errno
    import os

    from simulator.core.storage import StorageError
    from simulator.run.checkpoint import Checkpoint, save_checkpoint

    root = Location.of(tmp_path / "run")
    good = {"day": 0}
    (root / "checkpoints").mkdir()
    (root / "checkpoints" / "day=0000.pkl").write_bytes_atomic(pickle.dumps(good))

    def full(_fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(StorageError, match=r"cannot write .*day=0001\.pkl: no space left on the device \([\d,]+ bytes "
                                           r"needed, [\d,]+ bytes free there\)"):
        (root / "checkpoints" / "day=0001.pkl").write_bytes_atomic(b"x" * 1000)
    assert [p.name for p in (root / "checkpoints").children()] == ["day=0000.pkl"]  # no partial file, none renamed
    assert pickle.loads((root / "checkpoints" / "day=0000.pkl").read_bytes()) == good
    with pytest.raises(StorageError, match="resume the run"):
        save_checkpoint(root, Checkpoint(day=1, world={}, runtime={}, ready={}, ats_actions={}, n_events=0,
                                         diagnostics={}, arms={}), keep_last=1)  # the driver's path: the old one stays
    assert [p.name for p in (root / "checkpoints").children()] == ["day=0000.pkl"]
