"""The driver: one simulated day at a time, one tick at a time, every arm in each call.

A tick: publish weights that are due -> upload the tick's items -> serve the tick's requests
(in rounds: the r-th request of every visiting user) -> world responses -> feedback to the
arms' real-time features -> submit the tick's logged exposures to training. A day ends with
creator dynamics, metrics, MLflow logging and a checkpoint.
"""

from __future__ import annotations

import pickle
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from simulator.core.config import DualRecSpec, Scenario
from simulator.world.creators import CreatorDynamics
from simulator.core.diversion import HOLDOUT, CoDiversion
from simulator.diagnostics import summarise
from simulator.world.oracle_match import oracle_candidates
from simulator.metrics import (ArmData, compare_arms, daily_metrics, early_exposure, expo_thresholds, exposures_by_age,
                               ladder_comparison, overall_metrics, resolve_expo_k)
from simulator.world.replay import requests_of_day, tick_bounds, write_log
from simulator.run.runtime import Runtime, RuntimeSpec
from simulator.core.schema import EXPOSURES_SCHEMA, INTERACTION_TYPES, RESPONSE_TYPES, SECONDS_PER_DAY, UPLOADS_SCHEMA, VISITS_SCHEMA, Log
from simulator.world.platform import World, creator_covariates, creator_reference
from serving.arms import arm_kind
from trainers.arm_context import ArmContext
from trainers.learner import concat_batches

def rng_for(seed: int, *keys: int) -> np.random.Generator:
    """A generator derived from the run seed and a position in the run: resumable without saved RNG state."""
    return np.random.default_rng([seed, *keys])


@dataclass
class ArmRun:
    """The driver's view of one arm: its bucket, creator dynamics and what happened so far."""

    name: str
    index: int
    creators: np.ndarray
    users: np.ndarray
    dynamics: CreatorDynamics
    exposures: list[pl.DataFrame] = field(default_factory=list)
    uploads: list[pl.DataFrame] = field(default_factory=list)
    visits: list[pl.DataFrame] = field(default_factory=list)
    ats: list[np.ndarray] = field(default_factory=list)

    def data(self, share: float, covariates: tuple[np.ndarray, np.ndarray] | None = None) -> ArmData:
        """What the arm produced so far; ``covariates`` = (creator ids, (C, p) matrix) of
        :func:`~simulator.world.platform.creator_covariates`, aligned here to the arm's creators (0 for unknown ones)."""
        def cat(frames, schema):
            return pl.concat(frames) if frames else pl.from_arrow(schema.empty_table())
        cov = None
        if covariates is not None:
            ids, matrix = covariates
            pos = np.minimum(np.searchsorted(ids, self.creators), max(len(ids) - 1, 0))
            found = (ids[pos] == self.creators) if len(ids) else np.zeros(len(self.creators), bool)
            cov = np.zeros((len(self.creators), matrix.shape[1]))
            cov[found] = matrix[pos[found]]
        return ArmData(name=self.name, exposures=cat(self.exposures, EXPOSURES_SCHEMA),
                       uploads=cat(self.uploads, UPLOADS_SCHEMA), visits=cat(self.visits, VISITS_SCHEMA),
                       creators=self.creators, users=self.users, share=share, creator_covariates=cov)


@dataclass
class SimulationResult:
    scenario: Scenario
    days: int
    t0: int
    daily: dict[str, pl.DataFrame]
    overall: dict[str, dict[str, float]]
    comparison: pl.DataFrame
    age: dict[str, pl.DataFrame]
    timings: dict[str, float]
    events: int
    run_dir: Path
    diagnostics: dict[str, pl.DataFrame] = field(default_factory=dict)  # per arm, per day: strategy diagnostics, train.*
    ladder: pl.DataFrame | None = None  # each ladder arm over the one before it (scenario.ladder)
    expo_k: dict[str, int] = field(default_factory=dict)  # ExpoReach metric name -> the K it used (derived or fixed)


class Simulation:
    """Wires a scenario, a log, the world, the co-diversion and a runtime; ``run`` plays the days."""

    def __init__(self, scenario: Scenario, log: Log, runtime_factory: Callable[[RuntimeSpec], Runtime],
                 run_dir: Path, tracker=None, progress: bool = True, checkpoints: bool = True):
        """``checkpoints=False`` writes no daily checkpoint (a run that will never be resumed, e.g. A/A sweeps)."""
        self.sc = scenario
        self.checkpoints = checkpoints
        self.log = log
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.tracker = tracker
        self.progress = progress
        self.timings: dict[str, float] = defaultdict(float)
        t = time.perf_counter()
        self.t0 = log.t0
        self.days = min(scenario.days, log.n_days)
        self.T = scenario.ticks_per_day
        self.S = scenario.synthetic.slate_size
        self.world = World(log, scenario.world, scenario.seed)
        self.arm_specs = list(scenario.arms)
        self.names = [a.name for a in self.arm_specs]
        self.diversion = CoDiversion(self.names, [a.share for a in self.arm_specs], scenario.salt)
        events_root = write_log(log, self.run_dir / "log", self.days)
        # each creator is measured against its own pre-run feedback (docs/world.md, "Creators with memory")
        reference = creator_reference(log, self.t0, self.days, scenario.world.baseline_days)
        all_creators = reference.creator_ids
        c_arm = self.diversion.arm_of_creators(all_creators)
        users = np.unique(np.concatenate([log.events["user_id"].to_numpy(),
                                          log.users["user_id"].to_numpy() if log.users is not None else []]).astype(np.int64))
        u_arm = self.diversion.arm_of_users(users)
        self.arms = []
        for i, a in enumerate(self.arm_specs):
            m = c_arm == i
            dyn = CreatorDynamics(reference.select(m), scenario.world, self.days)
            self.arms.append(ArmRun(a.name, i, all_creators[m], users[u_arm == i], dyn))
        self.timings["setup"] += time.perf_counter() - t
        spec = RuntimeSpec(arms=tuple(self.arm_specs), train=scenario.train, events_root=events_root, t0=self.t0,
                           control=scenario.control,
                           arm_ctx=ArmContext(model=scenario.model, slate_size=self.S,
                                              n_item_dense=self.world.item_dense.shape[1], seed=scenario.seed,
                                              shared_base=scenario.train.base_models != "per_arm"))
        t = time.perf_counter()
        self.runtime = runtime_factory(spec)
        self.timings["runtime_start"] += time.perf_counter() - t
        self.pending: list[int] = []  # ticks submitted to training, weights not yet collected
        self.ready: dict[int, dict] = {}  # collected weights waiting for their publish tick
        self.ats_actions: dict[int, dict[str, np.ndarray]] = {}  # tick -> arm -> ts of positive interactions
        self.n_events = 0
        self.start_day = 0
        self.train_stats: dict[str, dict[str, list[float]]] = {n: {} for n in self.names}  # since the last day logged
        self.diagnostics: dict[str, list[dict[str, float]]] = {n: [] for n in self.names}  # one row per day

    # ------------------------------------------------------------------ helpers
    def _arm_of_items(self, item_ids: np.ndarray) -> np.ndarray:
        r = self.world.items.rows(item_ids)
        return self.diversion.arm_of_creators(self.world.item_creator[r])

    def _plan_uploads(self, day: int) -> dict[str, np.ndarray]:
        """The day's uploads per arm: replayed log items (kept or dropped) plus dynamic extra items."""
        lo, hi = self.t0 + day * SECONDS_PER_DAY, self.t0 + (day + 1) * SECONDS_PER_DAY
        n_logged = len(self.log.items)
        up = self.world.item_upload_ts[:n_logged]
        day_items = self.world.items.ids[:n_logged][(up >= lo) & (up < hi)]
        arm_of = self._arm_of_items(day_items)
        out = {}
        for a in self.arms:
            mine = day_items[arm_of == a.index]
            creators = self.world.item_creator[self.world.items.rows(mine)]
            rng = rng_for(self.sc.seed, day, a.index, 0xC2EA)
            keep, extra = a.dynamics.plan(day, creators, rng)
            factor = self.arm_specs[a.index].injected_upload_factor
            if factor != 1.0:  # an injected effect (calibration): its own stream, so other arms do not change
                inj = rng_for(self.sc.seed, day, a.index, 0x1A7)
                if factor < 1.0:
                    keep &= inj.random(len(keep)) < factor
                else:
                    extra = extra + inj.poisson((factor - 1.0) * a.dynamics.expected_uploads(day))
            extra_creators = np.repeat(a.creators, extra)
            new_ids = self.world.create_items(extra_creators, day, self.t0, rng)
            ids = np.concatenate([mine[keep], new_ids])
            origin = np.array(["replay"] * int(keep.sum()) + ["dynamic"] * len(new_ids), dtype=object)
            r = self.world.items.rows(ids)
            a.uploads.append(pl.DataFrame({
                "day": np.full(len(ids), day, np.int32), "item_id": ids, "creator_id": self.world.item_creator[r],
                "upload_ts": self.world.item_upload_ts[r], "category": self.world.item_category[r],
                "origin": origin.astype(str)}, schema=pl.Schema(UPLOADS_SCHEMA)))
            out[a.name] = ids
        return out

    def _upload_catalogue(self) -> None:
        n_logged = len(self.log.items)
        ids = self.world.items.ids[:n_logged][self.world.item_upload_ts[:n_logged] < self.t0]
        arm_of = self._arm_of_items(ids)
        self.runtime.upload({a.name: self.world.item_table(ids[arm_of == a.index]) for a in self.arms})

    # ------------------------------------------------------------------ one tick
    def _publish_due(self, tick_id: int, ts: int) -> None:
        delay = self.sc.train.publish_delay_ticks
        due = [t for t in self.pending if t + 1 + delay <= tick_id]
        for t in due:
            self.pending.remove(t)
            self.ready[t] = self.runtime.collect_weights(t)
        for t in sorted(k for k in self.ready if k + 1 + delay <= tick_id):
            w = self.ready.pop(t)
            self.runtime.publish({arm: (v, wt) for arm, (v, wt, _) in w.items()}, ts)
            for arm, acts in self.ats_actions.pop(t, {}).items():
                self.arms[self.names.index(arm)].ats.append((ts - acts).astype(np.int64))
            for arm, (_, _, st) in w.items():
                for k, v in st.items():
                    if np.isfinite(v):
                        self.train_stats[arm].setdefault(k, []).append(float(v))

    def _tick(self, day: int, tick: int, bounds: np.ndarray, reqs: pl.DataFrame, uploads: dict[str, np.ndarray]):
        tick_id = day * self.T + tick
        a_ts, b_ts = int(bounds[tick]), int(bounds[tick + 1])
        t = time.perf_counter()
        self._publish_due(tick_id, a_ts)
        batch = {}
        for a in self.arms:
            ids = uploads[a.name]
            up = self.world.item_upload_ts[self.world.items.rows(ids)]
            batch[a.name] = self.world.item_table(ids[(up >= a_ts) & (up < b_ts)])
            spec = self.arm_specs[a.index]
            if arm_kind(spec).oracle:  # the positive control gets the truth's candidate users
                dr = spec.dualrec or DualRecSpec()
                batch[a.name]["oracle_users"], batch[a.name]["oracle_scores"] = oracle_candidates(
                    self.world.response, batch[a.name]["item_id"], a.users, dr.rank_weights, dr.two_tower_k)
        self.runtime.upload(batch)
        self.timings["serve"] += time.perf_counter() - t
        tr = reqs.filter((pl.col("ts") >= a_ts) & (pl.col("ts") < b_ts))
        tr = tr.with_columns(pl.int_range(pl.len()).over("user_id").alias("round"))
        train_parts: dict[str, list[dict]] = {a.name: [] for a in self.arms}
        acts: dict[str, list[np.ndarray]] = {a.name: [] for a in self.arms}
        n_rounds = int(tr["round"].max()) + 1 if tr.height else 0
        for r in range(n_rounds):
            rr = tr.filter(pl.col("round") == r)
            u_all, ts_all, arm_all = rr["user_id"].to_numpy(), rr["ts"].to_numpy(), rr["arm"].to_numpy()
            requests = {}
            for a in self.arms:
                m = arm_all == a.index
                requests[a.name] = (u_all[m], ts_all[m], int(np.random.SeedSequence([self.sc.seed, tick_id, r, a.index]).generate_state(1)[0]))
            t = time.perf_counter()
            slates = self.runtime.recommend(requests)
            self.timings["serve"] += time.perf_counter() - t
            t = time.perf_counter()
            fb = {}
            for a in self.arms:
                u, ts, _ = requests[a.name]
                sl = slates[a.name]
                valid = sl.item_ids >= 0
                ri, si = np.nonzero(valid)
                users, items, ets = u[ri], sl.item_ids[ri, si], ts[ri]
                labels = self.world.respond(users, items, rng_for(self.sc.seed, tick_id, r, a.index, 0x0E5))
                fb[a.name] = (users, items, ets, labels)
                self.n_events += len(users)
                chan = np.asarray(sl.channel_names, dtype=object)[sl.channel[ri, si]] if len(ri) else np.empty(0, object)
                exp = {"day": np.full(len(users), day, np.int32), "tick": np.full(len(users), tick, np.int32),
                       "ts": ets, "user_id": users, "item_id": items, "creator_id": sl.creator_id[ri, si],
                       "upload_ts": sl.upload_ts[ri, si], "position": si.astype(np.int16), "channel": chan.astype(str)}
                for j, e in enumerate(RESPONSE_TYPES):
                    exp[e] = labels[:, j]
                a.exposures.append(pl.DataFrame(exp, schema=pl.Schema(EXPOSURES_SCHEMA)))
                train_parts[a.name].append({
                    "user_id": users, "item_id": items, "creator_id": sl.creator_id[ri, si], "category": sl.category[ri, si],
                    "user_dense": sl.user_dense[ri], "item_dense": sl.item_dense[ri, si], "pair_dense": sl.pair_dense[ri, si],
                    "labels": labels, **{k: v[ri, si] for k, v in sl.extra.items()},
                })
                inter = labels[:, : len(INTERACTION_TYPES)].any(1)
                acts[a.name].append(ets[inter])
            self.timings["world"] += time.perf_counter() - t
            t = time.perf_counter()
            self.runtime.feedback(fb)
            self.timings["serve"] += time.perf_counter() - t
        t = time.perf_counter()
        self.runtime.submit_training(tick_id, {k: concat_batches(v) for k, v in train_parts.items()})
        self.pending.append(tick_id)
        self.ats_actions[tick_id] = {k: np.concatenate(v) if v else np.empty(0, np.int64) for k, v in acts.items()}
        self.timings["train"] += time.perf_counter() - t

    # ------------------------------------------------------------------ days
    def _day(self, day: int) -> None:
        t = time.perf_counter()
        day_events = self.runtime.read_day(day)
        reqs = requests_of_day(day_events, self.S)
        reqs = reqs.with_columns(pl.Series("arm", self.diversion.arm_of_users(reqs["user_id"].to_numpy())))
        reqs = reqs.filter(pl.col("arm") != HOLDOUT)
        self.timings["replay"] += time.perf_counter() - t
        t = time.perf_counter()
        if day == 0:
            self._upload_catalogue()
        uploads = self._plan_uploads(day)
        self.timings["world"] += time.perf_counter() - t
        for a in self.arms:
            v = reqs.filter(pl.col("arm") == a.index).group_by("user_id").len().sort("user_id")
            a.visits.append(pl.DataFrame({"day": np.full(v.height, day, np.int32), "user_id": v["user_id"].to_numpy(),
                                          "requests": v["len"].to_numpy().astype(np.int32)}, schema=pl.Schema(VISITS_SCHEMA)))
        bounds = tick_bounds(self.t0, day, self.T)
        for tick in range(self.T):
            self._tick(day, tick, bounds, reqs, uploads)
            if self._bar is not None:
                self._bar.advance(self._tick_task)
        # creator dynamics see the day's feedback
        t = time.perf_counter()
        for a in self.arms:
            frames = [e for e in a.exposures if e.height and int(e["day"][0]) == day]
            ex = pl.concat(frames) if frames else None
            if ex is not None:
                inter = ex.select(pl.sum_horizontal([pl.col(c).cast(pl.Int32) for c in INTERACTION_TYPES]).alias("n"))
                a.dynamics.observe(day, ex["creator_id"].to_numpy(), np.ones(ex.height),
                                   inter["n"].to_numpy().astype(np.float64))
                follows = ex.filter(pl.col("follow"))
                a.dynamics.add_followers(follows["creator_id"].to_numpy(), follows["user_id"].to_numpy())
        self.timings["world"] += time.perf_counter() - t
        t = time.perf_counter()
        day_end = self.runtime.end_day(int(bounds[-1]))  # daily work of the arms (e.g. DualRec's activity model)
        self.timings["serve"] += time.perf_counter() - t
        t = time.perf_counter()
        for a in self.arms:
            row = {"day": float(day), **day_end.get(a.name, {}), **a.dynamics.diagnostics(day)}
            row.update({f"train.{k}": float(np.mean(v)) for k, v in self.train_stats[a.name].items()})
            self.diagnostics[a.name].append(row)
        if self.tracker is not None:
            per_arm = {}
            live = self.sc.metrics
            if live.expo_k is None:  # derived K is known only at the end: results() has the ExpoReach curves
                live = live.model_copy(update={"expo_k": []})
            for a in self.arms:
                d = daily_metrics(a.data(self.arm_specs[a.index].share), live, self.t0, day + 1)
                row = d.filter(pl.col("day") == day).drop("day").row(0, named=True)
                per_arm[a.name] = {k: float(v) for k, v in row.items()}
                per_arm[a.name].update({k: v for k, v in self.diagnostics[a.name][-1].items() if k != "day"})
            self.tracker.log_day(day, per_arm)
        self.train_stats = {n: {} for n in self.names}
        self.timings["metrics"] += time.perf_counter() - t
        t = time.perf_counter()
        self._collect_all()  # waits for the trainer to finish the day's ticks
        self.timings["train"] += time.perf_counter() - t
        t = time.perf_counter()
        self._checkpoint(day)
        self.timings["checkpoint"] += time.perf_counter() - t

    def _collect_all(self) -> None:
        for t in list(self.pending):
            self.ready[t] = self.runtime.collect_weights(t)
        self.pending.clear()

    def _checkpoint(self, day: int) -> None:
        self._collect_all()
        if not self.checkpoints:
            return
        ck = self.run_dir / "checkpoints"
        ck.mkdir(exist_ok=True)
        for a in self.arms:
            d = self.run_dir / "exposures" / a.name
            d.mkdir(parents=True, exist_ok=True)
            day_frames = [e for e in a.exposures if e.height and int(e["day"][0]) == day]
            if day_frames:
                pl.concat(day_frames).write_parquet(d / f"day={day:04d}.parquet")
        state = {
            "day": day, "world": self.world.state(), "runtime": self.runtime.snapshot(), "ready": self.ready,
            "ats_actions": self.ats_actions, "n_events": self.n_events, "diagnostics": self.diagnostics,
            "arms": {a.name: {"dynamics": a.dynamics.state(), "uploads": a.uploads, "visits": a.visits, "ats": a.ats}
                     for a in self.arms},
        }
        tmp = ck / f"day={day:04d}.pkl.tmp"
        with open(tmp, "wb") as f:
            pickle.dump(state, f, protocol=pickle.HIGHEST_PROTOCOL)
        tmp.rename(ck / f"day={day:04d}.pkl")
        for old in ck.glob("day=*.pkl"):
            if old.name != f"day={day:04d}.pkl":
                old.unlink()

    def restore_latest(self) -> int:
        """Load the last completed day's checkpoint; returns the next day to simulate."""
        ck = sorted((self.run_dir / "checkpoints").glob("day=*.pkl"))
        if not ck:
            raise FileNotFoundError(f"no checkpoint under {self.run_dir / 'checkpoints'}")
        with open(ck[-1], "rb") as f:
            st = pickle.load(f)
        self.world.load_state(st["world"])
        self.runtime.restore(st["runtime"])
        self.ready, self.ats_actions, self.n_events = st["ready"], st["ats_actions"], st["n_events"]
        self.diagnostics = st["diagnostics"]
        day = st["day"]
        for a in self.arms:
            s = st["arms"][a.name]
            a.dynamics.load_state(s["dynamics"])
            a.uploads, a.visits, a.ats = s["uploads"], s["visits"], s["ats"]
            a.exposures = [pl.read_parquet(p) for p in sorted((self.run_dir / "exposures" / a.name).glob("day=*.parquet"))
                           if int(p.stem.split("=")[1].split(".")[0]) <= day]
        self.start_day = day + 1
        return self.start_day

    # ------------------------------------------------------------------ run
    def run(self, progress_factory=None) -> SimulationResult:
        self._bar = None
        try:
            if progress_factory is not None and self.progress:
                with progress_factory() as bar:
                    self._bar = bar
                    day_task = bar.add_task("days", total=self.days, completed=self.start_day)
                    self._tick_task = bar.add_task(f"ticks ({', '.join(self.names)})", total=(self.days - self.start_day) * self.T)
                    for day in range(self.start_day, self.days):
                        self._day(day)
                        bar.advance(day_task)
            else:
                for day in range(self.start_day, self.days):
                    self._day(day)
        finally:
            self._bar = None
        self.runtime.release_arms()  # until now HTTP uploads got 409: the world must know every item it serves
        return self.results()

    def results(self) -> SimulationResult:
        t = time.perf_counter()
        covariates = creator_covariates(self.log, self.t0, self.days)
        data = {a.name: a.data(self.arm_specs[a.index].share, covariates) for a in self.arms}
        targets = [s.dualrec.targets for s in self.arm_specs if s.dualrec is not None]
        # derived K: from all arms' items, above the creator-side push (docs/metrics.md); a fixed expo_k is itself
        m = resolve_expo_k(list(data.values()), self.sc.metrics, self.t0, self.days, k_min=max(targets, default=0) + 1)
        daily = {k: daily_metrics(v, m, self.t0, self.days) for k, v in data.items()}
        overall = {k: overall_metrics(v, m, self.t0, self.days) for k, v in data.items()}
        for a in self.arms:
            lat = np.concatenate(a.ats) if a.ats else np.empty(0)
            if len(lat):
                overall[a.name]["ats_model_p50_min"] = float(np.percentile(lat, 50) / 60)
                overall[a.name]["ats_model_p95_min"] = float(np.percentile(lat, 95) / 60)
        comparison = compare_arms(data, self.sc.control, m, self.t0, self.days, self.sc.seed)
        ladder = ladder_comparison(data, self.sc.ladder, m, self.t0, self.days, self.sc.seed) if self.sc.ladder else None
        age = {k: exposures_by_age(v, self.t0) for k, v in data.items()}
        for k, v in data.items():
            overall[k].update(early_exposure(v, self.t0, self.days))
        diagnostics = {k: pl.DataFrame(rows, infer_schema_length=None) for k, rows in self.diagnostics.items() if rows}
        for k, diag in diagnostics.items():
            overall[k].update({c: v for c, v in summarise(diag).items() if not c.startswith("train.") or ".auc." in c})
        self.timings["metrics"] += time.perf_counter() - t
        return SimulationResult(scenario=self.sc, days=self.days, t0=self.t0, daily=daily, overall=overall,
                                comparison=comparison, age=age, timings=dict(self.timings), events=self.n_events,
                                run_dir=self.run_dir, diagnostics=diagnostics, ladder=ladder, expo_k=expo_thresholds(m))
