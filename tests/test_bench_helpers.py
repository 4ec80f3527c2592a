"""The benchmarks' measuring helpers (benchmarks/_common.py, bench_scenario.py): what they report must not depend on
how cheaply they read it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import _common  # noqa: E402
from bench_scenario import DirSizeSampler  # noqa: E402

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads Linux /proc")


def _wait_until(condition, seconds: float = 5.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def test_the_kept_process_tree_finds_what_a_full_scan_finds_and_follows_births_and_deaths():
    root = os.getpid()
    tree = _common.ProcessTree(root)
    # the same set as a full scan (asked until two scans agree: a process left by an earlier test may exit between)
    assert _wait_until(lambda: tree.pids() == _common.tree_pids(root)) and root in tree.pids()
    # a child that starts a grandchild: both are born between two calls
    child = subprocess.Popen(["bash", "-c", "sleep 30 & echo $!; wait"], stdout=subprocess.PIPE, text=True)
    try:
        grandchild = int(child.stdout.readline())
        pids = tree.pids()
        assert {child.pid, grandchild} <= pids
        assert _wait_until(lambda: tree.pids() == _common.tree_pids(root))
        outsider = os.getppid()  # this process's parent is outside the tree rooted here
        assert outsider not in pids
    finally:
        subprocess.run(["kill", "-9", str(grandchild)], check=False)
        child.kill()
        child.wait()
    assert child.pid not in tree.pids()  # gone processes leave the tree


def test_samplers_read_the_tree_they_measure():
    with _common.MemorySampler(interval=0.05) as mem, _common.ForeignLoad(interval=0.05) as load:
        sum(range(3_000_000))
        time.sleep(0.2)
    assert mem.samples >= 2 and mem.peak_rss > 0 and mem.peak_driver_rss > 0
    assert mem.peak_breakdown["driver"][2] == 1
    if mem.with_pss:
        assert mem.peak_pss > 0
    assert load.by_process()["driver"] > 0


def test_the_run_directory_sampler_survives_directories_deleted_under_it(tmp_path):
    """A run deletes its checkpoints' directories while the sampler walks them; a walk that raised there stopped
    the sampling thread, and the peak it reported then missed the rest of the run."""
    runs = tmp_path / "runs"
    stop = threading.Event()

    def churn():
        n = 0
        while not stop.is_set():
            folder = runs / "checkpoints" / f"day-{n % 3}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(20):
                (folder / f"part-{i}").write_bytes(b"x" * 100)
            shutil.rmtree(runs / "checkpoints", ignore_errors=True)
            n += 1

    worker = threading.Thread(target=churn)
    with DirSizeSampler(runs, interval=0.0) as disk:
        worker.start()
        time.sleep(0.5)
        stop.set()
        worker.join()
        (runs / "last").write_bytes(b"y" * 5000)
        assert disk._thread.is_alive()  # still sampling
        assert _wait_until(lambda: disk.peak >= 5000)
    assert disk.end == 5000


@pytest.mark.parametrize("given, expected", [(None, "0"), ("1", "1")])
def test_benchmarks_turn_rays_auto_connect_off_unless_told(given, expected):
    """As `simulate` does: a library thread outliving a run's ray.shutdown() must not start a fresh Ray in the
    benchmark's process (it would idle beside the reference tick's runs); a setting in the environment wins."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ENABLE_AUTO_CONNECT"}
    if given is not None:
        env["RAY_ENABLE_AUTO_CONNECT"] = given
    code = (f"import sys; sys.path.insert(0, {str(BENCH)!r}); import os, _common; "
            "print(os.environ['RAY_ENABLE_AUTO_CONNECT'])")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == expected, out.stderr
