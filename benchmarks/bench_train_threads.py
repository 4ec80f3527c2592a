"""The Train worker's tick on one thread, on the base learner's thread only, and on two balanced threads.

An in-process run of the scenario (``--days``, seed 0, ``train.base_thread=false``) records every tick's batches
as ``trainers.online.ArmLearners`` receives them; then fresh ``ArmLearners`` (the run's arms and configuration)
train those ticks again, one placement after another, ``--repeats`` times alternated, torch on one thread per
thread as in a Train worker:

- ``one``: every learner one after another in the caller's thread (``train.base_thread=false``);
- ``base``: the shared base learner in the second thread, every strategy learner in the caller's, in order (every
  learner taken to draw from torch's global generator: the placement before ``trainers/two_threads.py``);
- ``two``: the default, the learners that draw nothing from the global generator balanced between the threads.

Every placement gives the same weights (tests/trainers/test_two_threads.py); this measures the worker's tick alone,
with both cores free, as while the driver waits for it. Prints each replay's seconds and the ratios of the medians.

Run: ``python benchmarks/bench_train_threads.py`` (default: 3 days, 3 repeats, ~6 min on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ForeignLoad, fmt_table  # noqa: E402

PLACEMENTS = ("one", "base", "two")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--scenario", default="coldstart_ab")
    p.add_argument("--scale", default=None, help="the scenario's scale (default: its default)")
    p.add_argument("--days", type=int, default=3, help="days of the recorded run (4 ticks a day)")
    p.add_argument("--repeats", type=int, default=3, help="replays of each placement, alternated")
    p.add_argument("--json", type=Path, default=None)
    return p.parse_args(argv)


def record(args) -> tuple[tuple, list]:
    """The run's ArmLearners arguments and its ticks [(tick_id, {arm: batch})]."""
    import trainers.online as online
    from scenarios import get_scenario
    from simulator.run.session import RunOptions, run_scenario
    from simulator.run.sweep import parse_settings

    seen: dict = {"ticks": []}
    init, tick = online.ArmLearners.__init__, online.ArmLearners.train_tick

    def recording_init(self, *a, **k):
        seen["init"] = (a, k)
        init(self, *a, **k)

    def recording_tick(self, tick_id, batches):
        seen["ticks"].append((tick_id, batches))
        return tick(self, tick_id, batches)

    online.ArmLearners.__init__, online.ArmLearners.train_tick = recording_init, recording_tick
    tmp = Path(tempfile.mkdtemp(prefix="coldsim-bench-threads-"))
    try:
        sc = get_scenario(args.scenario)
        opts = RunOptions(scenario=sc.name, scale=args.scale, days=args.days, seed=0, runtime="local",
                          run_root=str(tmp / "runs"), experiment="bench",
                          overrides=parse_settings(["train.base_thread=false"]))
        run_scenario(sc, opts, tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}")
    finally:
        online.ArmLearners.__init__, online.ArmLearners.train_tick = init, tick
        shutil.rmtree(tmp, ignore_errors=True)  # the run's directory and MLflow DB: the ticks are in memory
    return seen["init"], seen["ticks"]


def replay(init: tuple, ticks: list, placement: str) -> float:
    """Seconds fresh learners take to train ``ticks`` in ``placement``."""
    import trainers.learner as learner
    from trainers.online import ArmLearners

    args, kwargs = list(init[0]), dict(init[1])
    args[2] = args[2].model_copy(update={"base_thread": placement != "one"})
    said = learner.draws_global_rng
    if placement == "base":
        learner.draws_global_rng = lambda task: True
    try:
        group = ArmLearners(*args, **kwargs)
        t0 = time.perf_counter()
        for tick_id, batches in ticks:
            group.train_tick(tick_id, batches)
        return time.perf_counter() - t0
    finally:
        learner.draws_global_rng = said


def main(argv=None) -> dict:
    import torch

    args = parse_args(argv)
    torch.set_num_threads(1)
    init, ticks = record(args)
    print(f"{args.scenario}: {len(ticks)} ticks recorded over {args.days} days; replaying "
          f"{', '.join(PLACEMENTS)} x {args.repeats}, alternated")
    times: dict[str, list[float]] = {p: [] for p in PLACEMENTS}
    with ForeignLoad() as load:
        for _ in range(args.repeats):
            for placement in PLACEMENTS:
                times[placement].append(replay(init, ticks, placement))
                print(f"  {placement}: {times[placement][-1]:.2f} s", flush=True)
    med = {p: statistics.median(v) for p, v in times.items()}
    rows = [[p, " / ".join(f"{t:.2f}" for t in times[p]), f"{med[p]:.2f}", f"{med['one'] / med[p]:.2f}x"]
            for p in PLACEMENTS]
    print(fmt_table(rows, ["placement", "seconds (each replay)", "median", "speed-up vs one"]))
    print(f"two threads balanced vs the base learner's thread alone: {med['base'] / med['two']:.2f}x")
    print(f"contention check: {load.summary()}")
    figures = {"ticks": len(ticks), "days": args.days, "seconds": times, "median_s": med, "load": load.as_dict()}
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    return figures


if __name__ == "__main__":
    main()
