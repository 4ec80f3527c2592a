"""A simulation driver that the fault tests (tests/e2e/test_e2e_faults.py) run in a subprocess and kill.

``python tests/e2e/chaos_driver.py CONFIG.json``; the config names the run (scenario, scale, days, runtime,
run_root, tracking URI, setting overrides) and its faults, each at a tick counted over the run (from 1):

- ``replica``: [arm, tick]: the arm's Serve replica is killed (Ray runtime);
- ``worker``: tick: the Ray Train worker process is SIGKILLed (Ray runtime);
- ``driver_tick``: tick: this process SIGKILLs itself after the tick;
- ``driver_checkpoint``: k: this process dies in the middle of writing its k-th checkpoint (half of it written);
- ``driver_mlflow``: day: this process dies while logging the day's metrics to MLflow (one arm's logged).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def die() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def main(config: dict) -> None:
    from scenarios import get_scenario
    from simulator.core.storage import Location
    from simulator.run.session import RunOptions, run_scenario
    from simulator.run.tracking import RunTracker

    from test_e2e_ray import Faults, kill_arm_replica, kill_train_worker

    faults = {}
    if "replica" in config:
        arm, tick = config["replica"]
        faults[tick] = lambda: kill_arm_replica(arm)
    if "worker" in config:
        faults[config["worker"]] = kill_train_worker
    if "driver_tick" in config:
        faults[config["driver_tick"]] = die
    if "driver_checkpoint" in config:
        writes = {"n": 0}
        write = Location.write_bytes_atomic

        def dying_write(self, data):
            if self.name.endswith(".pkl"):
                writes["n"] += 1
                if writes["n"] == config["driver_checkpoint"]:
                    with open(self.path + ".tmp", "wb") as file:
                        file.write(data[: len(data) // 2])
                    die()
            write(self, data)

        Location.write_bytes_atomic = dying_write
    if "driver_mlflow" in config:
        log_day = RunTracker.log_day

        def dying_log(self, day, per_arm):
            if day == config["driver_mlflow"]:
                first = next(iter(per_arm))
                log_day(self, day, {first: per_arm[first]})
                die()
            log_day(self, day, per_arm)

        RunTracker.log_day = dying_log
    scenario = get_scenario(config["scenario"])
    opts = RunOptions(scenario=scenario.name, scale=config["scale"], days=config["days"], runtime=config["runtime"],
                      run_root=config["run_root"], overrides=config.get("overrides"))
    run_scenario(scenario, opts, tracking_uri=config["tracking"], progress_factory=Faults(faults))


if __name__ == "__main__":
    main(json.loads(Path(sys.argv[1]).read_text()))
