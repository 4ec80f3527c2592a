"""Checkpoint cost of a scenario run: the checkpoint stage's seconds and share of wall time, the run directory's
size, and one checkpoint's size by component.

Runs ``simulator.run.session.run_scenario`` (``runtime="local"`` unless ``--runtime ray``; no MLflow) into a
temporary run directory with its checkpoints kept (``keep_checkpoints``), then reads the latest checkpoint back
(``load_latest_checkpoint``) and measures each component serialised on its own (pickle, highest protocol;
the arms' policies and learners are already bytes, their fields are re-serialised one by one): the world, each
arm's policy (and its largest fields), each learner, and the driver's tables (per arm: creator dynamics,
uploads, visits, ATS samples; the pending weights and ATS actions; diagnostics). Sizes are of the objects as
pickled; ``on disk`` is the file. A run checkpoints every ``checkpoint_every`` days but never after its last day,
so a tiny run (3 days) needs ``--checkpoint-every 1`` to have a checkpoint to measure.

The checkpoint stage is split into its parts (:class:`CheckpointParts`); ``--runtime ray`` measures it with the
arms in Serve replicas and the learners in the Ray Train worker, as a default run has them.

Run: ``python benchmarks/bench_checkpoint.py --scale tiny`` (seconds), ``--scale small`` (~2 min on 2 cores),
``--scale default --runtime ray`` (~4 min).
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import pickle
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ForeignLoad, fmt_table  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--scenario", default="coldstart_ab")
    p.add_argument("--scale", default="tiny", help="named scale (tiny, small) or 'default'")
    p.add_argument("--runtime", choices=["local", "ray"], default="local")
    p.add_argument("--days", type=int, default=None, help="simulate only this many days")
    p.add_argument("--checkpoint-every", type=int, default=None,
                   help="days between checkpoints (default: the scenario's); 1 checkpoints a tiny run")
    p.add_argument("--fields", type=int, default=6, help="largest fields of each policy to list")
    p.add_argument("--json", type=Path, default=None, help="write the figures to this file")
    return p.parse_args(argv)


def mb(n: int | float) -> float:
    return n / 2**20


def size_of(obj) -> int:
    return len(obj) if isinstance(obj, bytes) else len(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))


def dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def policy_fields(data: bytes) -> dict[str, int]:
    """Each field of an arm's ``ArmPolicyState`` (the feature store's fields one by one), pickled on its own."""
    import torch

    state = torch.load(io.BytesIO(data), weights_only=False)
    out = {}
    for field in dataclasses.fields(state):
        value = getattr(state, field.name)
        if dataclasses.is_dataclass(value):
            out.update({f"{field.name}.{sub.name}": size_of(getattr(value, sub.name))
                        for sub in dataclasses.fields(value)})
        else:
            out[field.name] = size_of(value)
    return out


class CheckpointParts:
    """Times the parts of the driver's checkpoint stage by wrapping the calls ``Simulation._checkpoint`` makes: the
    day's exposures, the runtime's snapshot (the arms' policies and the learners), the weights collected but not
    published (fetched and compacted), the pickling (``CheckpointWriter.submit``, which first waits for the
    previous write). The write itself runs in the writer's thread (``checkpoint_background`` in the timings)."""

    def __init__(self) -> None:
        import simulator.run.loop as loop
        from simulator.run.checkpoint import CheckpointWriter
        from simulator.run.ray_runtime import RayRuntime
        from simulator.run.runtime import LocalRuntime

        self.seconds: dict[str, float] = {}
        self._undo = []
        self._wrap(loop, "save_exposures", "the day's exposures (parquet)")
        self._wrap(loop, "compact_tree", "weights not yet published: compacted")
        self._wrap(CheckpointWriter, "submit", "pickled (and the previous write awaited)")
        for runtime in (LocalRuntime, RayRuntime):
            self._wrap(runtime, "snapshot", "runtime snapshot: policies and learners")
            self._wrap(runtime, "fetch_weights", "weights not yet published: fetched")

    def _wrap(self, owner, name: str, label: str) -> None:
        original = getattr(owner, name)
        seconds = self.seconds

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                seconds[label] = seconds.get(label, 0.0) + time.perf_counter() - start

        setattr(owner, name, timed)
        self._undo.append((owner, name, original))

    def restore(self) -> None:
        for owner, name, original in reversed(self._undo):
            setattr(owner, name, original)


def main(argv=None) -> dict:
    args = parse_args(argv)
    from scenarios import get_scenario
    from simulator.run.checkpoint import CHECKPOINTS, load_latest_checkpoint
    from simulator.run.session import RunOptions, run_scenario

    scenario = get_scenario(args.scenario)
    tmp = Path(tempfile.mkdtemp(prefix="coldsim-bench-ckpt-"))
    if args.checkpoint_every is not None:
        scenario = scenario.model_copy(update={"checkpoint_every": args.checkpoint_every})
    opts = RunOptions(scenario=scenario.name, scale=None if args.scale == "default" else args.scale, days=args.days,
                      runtime=args.runtime, run_root=str(tmp), keep_checkpoints=True)
    print(f"bench_checkpoint: {scenario.name} scale={args.scale} days={args.days or 'all'} runtime={args.runtime} "
          f"checkpoint_every={scenario.checkpoint_every}")
    try:
        parts = CheckpointParts()
        with ForeignLoad() as load:
            start = time.perf_counter()
            try:
                outcome = run_scenario(scenario, opts, tracking_uri=None)
            finally:
                parts.restore()
            wall = time.perf_counter() - start
        result = outcome.result
        run_dir = Path(result.run_dir)
        checkpoint_s = result.timings.get("checkpoint", 0.0)
        sizes = {sub.name: dir_size(sub) for sub in sorted(run_dir.iterdir()) if sub.is_dir()}
        files = sorted((run_dir / CHECKPOINTS).glob("day=*")) if (run_dir / CHECKPOINTS).exists() else []
        figures = {"scenario": scenario.name, "scale": args.scale, "wall_s": wall, "checkpoint_s": checkpoint_s,
                   "checkpoint_share": checkpoint_s / wall, "run_dir_bytes": dir_size(run_dir), "subdirs": sizes,
                   "checkpoint_files": [f.name for f in files]}
        background = result.timings.get("checkpoint_background", 0.0)
        figures.update(checkpoint_parts_s=parts.seconds, checkpoint_background_s=background)
        print(f"\nwall {wall:.1f} s, checkpoint stage {checkpoint_s:.2f} s = {100 * checkpoint_s / wall:.1f}% of wall; "
              f"written in the background thread, beside it: {background:.2f} s")
        print(fmt_table([[name, secs, 100 * secs / max(checkpoint_s, 1e-9)] for name, secs in parts.seconds.items()],
                        ["part of the checkpoint stage", "seconds", "% of the stage"]))
        print(f"run directory {mb(figures['run_dir_bytes']):.1f} MB: "
              + ", ".join(f"{name}/ {mb(size):.1f} MB" for name, size in sizes.items()))
        if files:
            checkpoint = load_latest_checkpoint(run_dir)
            on_disk = files[-1].stat().st_size
            components = {"world": size_of(checkpoint.world)}
            fields = {}
            for arm, data in checkpoint.runtime["policies"].items():
                components[f"policy {arm}"] = size_of(data)
                fields[arm] = policy_fields(data)
            for name, data in checkpoint.runtime["learners"].items():
                components[f"learner {name}"] = size_of(data)
            for arm, saved in checkpoint.arms.items():
                components[f"driver {arm}"] = size_of(saved)
            components["driver ready weights"] = size_of(checkpoint.ready)
            components["driver ats actions + diagnostics"] = size_of((checkpoint.ats_actions, checkpoint.diagnostics))
            total = sum(components.values())
            print(f"\nlatest checkpoint {files[-1].name}: {mb(on_disk):.2f} MB on disk, {mb(total):.2f} MB pickled "
                  "by component")
            print(fmt_table([[name, mb(size), 100 * size / total] for name, size in components.items()],
                            ["component", "MB", "%"]))
            for arm, arm_fields in fields.items():
                top = sorted(arm_fields.items(), key=lambda kv: -kv[1])[: args.fields]
                print(f"  {arm}: " + ", ".join(f"{name} {mb(size):.2f}" for name, size in top) + " (MB)")
            figures.update(checkpoint_bytes=on_disk, components=components, policy_fields=fields)
        print(f"\n{load.summary()}")
        figures["contention"] = load.as_dict()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=1))
    return figures


if __name__ == "__main__":
    main()
