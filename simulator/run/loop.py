"""The driver: one simulated day at a time, one tick at a time, every arm in each call.

A tick: publish weights that are due -> upload the tick's items -> serve the tick's requests
(in rounds: the r-th request of every visiting user) -> world responses -> feedback to the
arms' real-time features -> submit the tick's logged exposures to training. A day ends with
creator dynamics, metrics, MLflow logging and a checkpoint.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
import polars as pl

from simulator.core.config import DualRecSpec, MetricsConfig, Scenario
from simulator.core.diversion import HOLDOUT, CoDiversion
from simulator.core.storage import Location
from simulator.core.schema import (EXPOSURES_SCHEMA, INTERACTION_TYPES, RESPONSE_TYPES, SECONDS_PER_DAY, UPLOADS_SCHEMA,
                                   VISITS_SCHEMA, Log)
from simulator.metrics.daily import LiveDaily
from simulator.run.checkpoint import (ArmCheckpoint, Checkpoint, CheckpointWriter, load_exposures,
                                      load_latest_checkpoint, save_exposures)
from simulator.run.results import ArmRun, SimulationResult, measure
from simulator.run.recovery import play
from simulator.run.runtime import Runtime, RuntimeSpec
from simulator.run.timing import StageTimer
from simulator.world.creators import CreatorDynamics
from simulator.world.oracle_match import oracle_candidates
from simulator.world.platform import World, creator_reference
from simulator.world.replay import requests_of_day, tick_bounds, write_log
from serving.arms import arm_kind
from trainers.arm_context import ArmContext
from trainers.compact import compact_tree, expand
from trainers.learner import concat_batches

if TYPE_CHECKING:
    from serving.stack import Slates



def rng_for(seed: int, *keys: int) -> np.random.Generator:
    """A generator derived from the run seed and a position in the run: resumable without saved RNG state."""
    return np.random.default_rng([seed, *keys])


class Simulation:
    """Wires a scenario, a log, the world, the co-diversion and a runtime; ``run`` plays the days."""

    def __init__(self, scenario: Scenario, log: Log, runtime_factory: Callable[[RuntimeSpec], Runtime],
                 run_dir: Location | Path | str, tracker=None, progress: bool = True, checkpoints: bool = True, keep_last: int = 1):
        """``checkpoints=False`` writes no checkpoint (a run that will never be resumed, e.g. A/A sweeps);
        ``keep_last``: how many of the latest checkpoints stay on disk."""
        self.scenario = scenario
        self.checkpoints = checkpoints
        self.keep_last = keep_last
        self.writer = CheckpointWriter()  # checkpoints reach the disk while the next day plays
        self.recoveries = 0  # in place, after a part of the runtime lost its state (simulator.run.recovery)
        self.log = log
        self.run_dir = Location.of(run_dir)  # a local directory or a URI (simulator/core/storage.py)
        self.run_dir.mkdir()
        self.tracker = tracker
        self.progress = progress
        self.timer = StageTimer()
        with self.timer("setup"):
            self.t0 = log.t0
            self.days = min(scenario.days, log.n_days)  # lowered by a caller that stops early (``stop_after_day``)
            self.planned_days = self.days
            self.ticks_per_day = scenario.ticks_per_day
            self.slate_size = scenario.synthetic.slate_size
            self.world = World(log, scenario.world, scenario.seed)
            self.arm_specs = list(scenario.arms)
            self.arm_names = [spec.name for spec in self.arm_specs]
            self.diversion = CoDiversion(self.arm_names, [spec.share for spec in self.arm_specs], scenario.salt)
            events_root = write_log(log, self.run_dir / "log", self.days)
            self.arms = self._arm_runs(log, scenario)
        runtime_spec = RuntimeSpec(arms=tuple(self.arm_specs), train=scenario.train, events_root=events_root, t0=self.t0,
                                   storage=self.run_dir, arm_replicas=scenario.serve.arm_replicas,
                                   control=scenario.control,
                                   arm_ctx=ArmContext(model=scenario.model, slate_size=self.slate_size,
                                                      n_item_dense=self.world.item_dense.shape[1], seed=scenario.seed,
                                                      shared_base=scenario.train.base_models != "per_arm"))
        with self.timer("runtime_start"):
            self.runtime = runtime_factory(runtime_spec)
        self.pending: list[int] = []  # ticks submitted to training, weights not yet collected
        self.ready: dict[int, dict] = {}  # collected weights waiting for their publish tick
        self.ats_actions: dict[int, dict[str, np.ndarray]] = {}  # tick -> arm -> ts of positive interactions
        self.n_events = 0
        self.start_day = 0
        self.train_stats: dict[str, dict[str, list[float]]] = {name: {} for name in self.arm_names}  # since the last day logged
        self.diagnostics: dict[str, list[dict[str, float]]] = {name: [] for name in self.arm_names}  # one row per day
        live = scenario.metrics  # the tracker's daily values; derived K is known only at the end (results())
        if live.expo_k is None:
            live = live.model_copy(update={"expo_k": []})
        self._live = {name: LiveDaily(live, self.t0) for name in self.arm_names}  # each arm's metrics of the day

    @property
    def timings(self) -> dict[str, float]:
        """Seconds per stage of the driver so far (``setup``, ``runtime_start``, ``replay``, ``world``, ``serve``,
        ``train``, ...), and ``checkpoint_background``: the checkpoints' writing in their thread, beside the stages."""
        background = {"checkpoint_background": self.writer.seconds} if self.writer.seconds else {}
        return dict(self.timer.seconds) | background

    def _arm_runs(self, log: Log, scenario: Scenario) -> list[ArmRun]:
        """Each arm's buckets of creators and users, and its creators' dynamics."""
        # each creator is measured against its own pre-run feedback (docs/world.md, "Creators with memory")
        reference = creator_reference(log, self.t0, self.days, scenario.world.baseline_days)
        all_creators = reference.creator_ids
        arm_of_creator = self.diversion.arm_of_creators(all_creators)
        known_users = log.users["user_id"].to_numpy() if log.users is not None else []
        users = np.unique(np.concatenate([log.events["user_id"].to_numpy(), known_users]).astype(np.int64))
        arm_of_user = self.diversion.arm_of_users(users)
        arms = []
        for index, spec in enumerate(self.arm_specs):
            mine = arm_of_creator == index
            dynamics = CreatorDynamics(reference.select(mine), scenario.world, self.days)
            arms.append(ArmRun(spec.name, index, all_creators[mine], users[arm_of_user == index], dynamics))
        return arms

    # ------------------------------------------------------------------ uploads
    def _arm_of_items(self, item_ids: np.ndarray) -> np.ndarray:
        rows = self.world.items.rows(item_ids)
        return self.diversion.arm_of_creators(self.world.item_creator[rows])

    def _plan_uploads(self, day: int) -> dict[str, np.ndarray]:
        """The day's uploads per arm: replayed log items (kept or dropped) plus dynamic extra items."""
        day_start, day_end = self.t0 + day * SECONDS_PER_DAY, self.t0 + (day + 1) * SECONDS_PER_DAY
        n_logged = len(self.log.items)
        upload_ts = self.world.item_upload_ts[:n_logged]
        day_items = self.world.items.ids[:n_logged][(upload_ts >= day_start) & (upload_ts < day_end)]
        arm_of_item = self._arm_of_items(day_items)
        planned = {}
        for arm in self.arms:
            mine = day_items[arm_of_item == arm.index]
            creators = self.world.item_creator[self.world.items.rows(mine)]
            rng = rng_for(self.scenario.seed, day, arm.index, 0xC2EA)
            keep, extra = arm.dynamics.plan(day, creators, rng)
            factor = self.arm_specs[arm.index].injected_upload_factor
            if factor != 1.0:  # an injected effect (calibration): its own stream, so other arms do not change
                injected = rng_for(self.scenario.seed, day, arm.index, 0x1A7)
                if factor < 1.0:
                    keep &= injected.random(len(keep)) < factor
                else:
                    extra = extra + injected.poisson((factor - 1.0) * arm.dynamics.expected_uploads(day))
            new_ids = self.world.create_items(np.repeat(arm.creators, extra), day, self.t0, rng)
            item_ids = np.concatenate([mine[keep], new_ids])
            origin = np.array(["replay"] * int(keep.sum()) + ["dynamic"] * len(new_ids), dtype=object)
            rows = self.world.items.rows(item_ids)
            arm.uploads.append(pl.DataFrame({
                "day": np.full(len(item_ids), day, np.int32), "item_id": item_ids,
                "creator_id": self.world.item_creator[rows], "upload_ts": self.world.item_upload_ts[rows],
                "category": self.world.item_category[rows], "origin": origin.astype(str)}, schema=pl.Schema(UPLOADS_SCHEMA)))
            planned[arm.name] = item_ids
        return planned

    def _upload_catalogue(self) -> None:
        n_logged = len(self.log.items)
        item_ids = self.world.items.ids[:n_logged][self.world.item_upload_ts[:n_logged] < self.t0]
        arm_of_item = self._arm_of_items(item_ids)
        self.runtime.upload({arm.name: self.world.item_table(item_ids[arm_of_item == arm.index]) for arm in self.arms})

    def _tick_uploads(self, uploads: dict[str, np.ndarray], tick_start: int, tick_end: int) -> dict[str, dict]:
        """Each arm's planned items with ``upload_ts`` in the tick, as item tables (the positive control's with its
        truth candidates)."""
        batch = {}
        for arm in self.arms:
            item_ids = uploads[arm.name]
            upload_ts = self.world.item_upload_ts[self.world.items.rows(item_ids)]
            table = self.world.item_table(item_ids[(upload_ts >= tick_start) & (upload_ts < tick_end)])
            spec = self.arm_specs[arm.index]
            if arm_kind(spec).oracle:  # the positive control gets the truth's candidate users
                dualrec = spec.dualrec or DualRecSpec()
                table["oracle_users"], table["oracle_scores"] = oracle_candidates(
                    self.world.response, table["item_id"], arm.users, dualrec.rank_weights, dualrec.two_tower_k)
            batch[arm.name] = table
        return batch

    # ------------------------------------------------------------------ one tick
    def _publish_due(self, tick_id: int, ts: int) -> None:
        """Collect and publish the weights of ticks ``t`` with ``t + 1 + publish_delay_ticks <= tick_id`` at ``ts``."""
        delay = self.scenario.train.publish_delay_ticks
        with self.timer("train"):  # waiting for the trainer (it runs concurrently with serving)
            for trained_tick in [pending for pending in self.pending if pending + 1 + delay <= tick_id]:
                self.pending.remove(trained_tick)
                self.ready[trained_tick] = self.runtime.collect_weights(trained_tick)
        for trained_tick in sorted(ready for ready in self.ready if ready + 1 + delay <= tick_id):
            weights = self.ready.pop(trained_tick)
            with self.timer("serve"):
                self.runtime.publish({arm: (version, arm_weights) for arm, (version, arm_weights, _) in weights.items()},
                                     ts)
            for arm, action_ts in self.ats_actions.pop(trained_tick, {}).items():
                self.arms[self.arm_names.index(arm)].ats.append((ts - action_ts).astype(np.int64))
            for arm, (_, _, stats) in weights.items():
                for name, value in stats.items():
                    if np.isfinite(value):
                        self.train_stats[arm].setdefault(name, []).append(float(value))

    def _tick(self, day: int, tick: int, bounds: np.ndarray, requests: pl.DataFrame, uploads: dict[str, np.ndarray]):
        """Publish due weights, upload the tick's items, serve its requests round by round, submit it to training."""
        tick_id = day * self.ticks_per_day + tick
        tick_start, tick_end = int(bounds[tick]), int(bounds[tick + 1])
        self._publish_due(tick_id, tick_start)
        with self.timer("serve"):
            self.runtime.upload(self._tick_uploads(uploads, tick_start, tick_end))
        requests_this_tick = requests.filter((pl.col("ts") >= tick_start) & (pl.col("ts") < tick_end))
        requests_this_tick = requests_this_tick.with_columns(pl.int_range(pl.len()).over("user_id").alias("round"))
        training_rows: dict[str, list[dict]] = {arm.name: [] for arm in self.arms}
        positive_ts: dict[str, list[np.ndarray]] = {arm.name: [] for arm in self.arms}
        n_rounds = int(requests_this_tick["round"].max()) + 1 if requests_this_tick.height else 0
        for round_index in range(n_rounds):
            requests_this_round = requests_this_tick.filter(pl.col("round") == round_index)
            arm_requests = self._round_requests(requests_this_round, tick_id, round_index)
            with self.timer("serve"):
                slates = self.runtime.recommend(arm_requests)
            with self.timer("world"):
                feedback = {}
                for arm in self.arms:
                    feedback[arm.name], rows, interaction_ts = self._respond(
                        arm, day, tick, tick_id, round_index, arm_requests[arm.name], slates[arm.name])
                    training_rows[arm.name].append(rows)
                    positive_ts[arm.name].append(interaction_ts)
            with self.timer("serve"):
                self.runtime.feedback(feedback)
        with self.timer("serve"):
            self.runtime.check_arms()  # a restarted replica lost its arm: stop rather than train on its slates
        with self.timer("train"):
            self.runtime.submit_training(tick_id, {arm: concat_batches(rows) for arm, rows in training_rows.items()})
            self.pending.append(tick_id)
            self.ats_actions[tick_id] = {arm: np.concatenate(times) if times else np.empty(0, np.int64)
                                         for arm, times in positive_ts.items()}

    def _round_requests(self, requests_this_round: pl.DataFrame, tick_id: int,
                        round_index: int) -> dict[str, tuple[np.ndarray, np.ndarray, int]]:
        """Arm -> (user ids, request times, the arm's serving seed of this round)."""
        user_ids, request_ts = requests_this_round["user_id"].to_numpy(), requests_this_round["ts"].to_numpy()
        arm_of_request = requests_this_round["arm"].to_numpy()
        out = {}
        for arm in self.arms:
            mine = arm_of_request == arm.index
            seed = np.random.SeedSequence([self.scenario.seed, tick_id, round_index, arm.index]).generate_state(1)[0]
            out[arm.name] = (user_ids[mine], request_ts[mine], int(seed))
        return out

    def _respond(self, arm: ArmRun, day: int, tick: int, tick_id: int, round_index: int,
                 request: tuple[np.ndarray, np.ndarray, int], slates: Slates):
        """The world's responses to an arm's slates of one round, recorded in the arm's exposures. Returns the arm's
        feedback (user ids, item ids, times, labels), its training rows (the features as served plus the labels)
        and the times of the round's positive interactions (for ATS)."""
        request_users, request_ts, _ = request
        valid = slates.item_ids >= 0
        request_row, slot = np.nonzero(valid)
        users, items, event_ts = request_users[request_row], slates.item_ids[request_row, slot], request_ts[request_row]
        labels = self.world.respond(users, items, rng_for(self.scenario.seed, tick_id, round_index, arm.index, 0x0E5))
        self.n_events += len(users)
        channel = (np.asarray(slates.channel_names, dtype=object)[slates.channel[request_row, slot]]
                   if len(request_row) else np.empty(0, object))
        exposures = {"day": np.full(len(users), day, np.int32), "tick": np.full(len(users), tick, np.int32),
                     "ts": event_ts, "user_id": users, "item_id": items, "creator_id": slates.creator_id[request_row, slot],
                     "upload_ts": slates.upload_ts[request_row, slot], "position": slot.astype(np.int16),
                     "channel": channel.astype(str)}
        for column, response in enumerate(RESPONSE_TYPES):
            exposures[response] = labels[:, column]
        arm.exposures.append(pl.DataFrame(exposures, schema=pl.Schema(EXPOSURES_SCHEMA)))
        training_rows = {
            "user_id": users, "item_id": items, "creator_id": slates.creator_id[request_row, slot],
            "category": slates.category[request_row, slot], "user_dense": slates.user_dense[request_row],
            "item_dense": slates.item_dense[request_row, slot], "pair_dense": slates.pair_dense[request_row, slot],
            "labels": labels, **{name: value[request_row, slot] for name, value in slates.extra.items()},
        }
        interacted = labels[:, : len(INTERACTION_TYPES)].any(1)
        return (users, items, event_ts, labels), training_rows, event_ts[interacted]

    # ------------------------------------------------------------------ days
    def _day(self, day: int, on_tick: Callable[[], None] | None = None) -> None:
        """Replay the day's requests tick by tick, then creator dynamics, the arms' daily work, metrics, checkpoint."""
        with self.timer("replay"):
            requests = requests_of_day(self.runtime.read_day(day), self.slate_size)
            requests = requests.with_columns(pl.Series("arm", self.diversion.arm_of_users(requests["user_id"].to_numpy())))
            requests = requests.filter(pl.col("arm") != HOLDOUT)
        with self.timer("world"):
            if day == 0:
                self._upload_catalogue()
            uploads = self._plan_uploads(day)
        self._record_visits(day, requests)
        bounds = tick_bounds(self.t0, day, self.ticks_per_day)
        for tick in range(self.ticks_per_day):
            self._tick(day, tick, bounds, requests, uploads)
            if on_tick is not None:
                on_tick()
        with self.timer("world"):
            self._observe_creators(day)
        with self.timer("serve"):
            day_end = self.runtime.end_day(int(bounds[-1]))  # daily work of the arms (e.g. DualRec's activity model)
        with self.timer("metrics"):
            for arm in self.arms:
                row = {"day": float(day), **day_end.get(arm.name, {}), **arm.dynamics.diagnostics(day)}
                row.update({f"train.{name}": float(np.mean(values)) for name, values in self.train_stats[arm.name].items()})
                self.diagnostics[arm.name].append(row)
            if self.tracker is not None:
                self.tracker.log_day(day, self._day_metrics(day))
            self.train_stats = {name: {} for name in self.arm_names}
        if self.checkpoints and self.checkpoint_due(day):
            with self.timer("train"):
                self._collect_all()  # a checkpoint holds the day's trained weights: wait for the trainer
        with self.timer("checkpoint"):
            self._checkpoint(day)

    def _record_visits(self, day: int, requests: pl.DataFrame) -> None:
        """Requests per visiting user and arm (``VISITS_SCHEMA``)."""
        for arm in self.arms:
            visits = requests.filter(pl.col("arm") == arm.index).group_by("user_id").len().sort("user_id")
            arm.visits.append(pl.DataFrame({"day": np.full(visits.height, day, np.int32),
                                            "user_id": visits["user_id"].to_numpy(),
                                            "requests": visits["len"].to_numpy().astype(np.int32)},
                                           schema=pl.Schema(VISITS_SCHEMA)))

    def _observe_creators(self, day: int) -> None:
        """Creator dynamics see the day's exposures, interactions and new followers."""
        for arm in self.arms:
            frames = arm.exposures_of_day(day)
            if not frames:
                continue
            exposures = pl.concat(frames)
            interactions = exposures.select(
                pl.sum_horizontal([pl.col(c).cast(pl.Int32) for c in INTERACTION_TYPES]).alias("n"))
            arm.dynamics.observe(day, exposures["creator_id"].to_numpy(), np.ones(exposures.height),
                                 interactions["n"].to_numpy().astype(np.float64))
            follows = exposures.filter(pl.col("follow"))
            arm.dynamics.add_followers(follows["creator_id"].to_numpy(), follows["user_id"].to_numpy())

    def _day_metrics(self, day: int) -> dict[str, dict[str, float]]:
        """Each arm's metrics of ``day`` and its diagnostics row, as the tracker logs them."""
        per_arm = {}
        for arm in self.arms:
            per_arm[arm.name] = self._live[arm.name].row(arm.data(self.arm_specs[arm.index].share), day)
            per_arm[arm.name].update({name: value for name, value in self.diagnostics[arm.name][-1].items() if name != "day"})
        return per_arm

    def _collect_all(self) -> None:
        for tick_id in list(self.pending):
            self.ready[tick_id] = self.runtime.collect_weights(tick_id)
        self.pending.clear()

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_due(self, day: int) -> bool:
        """Whether the run's state is saved after ``day``: every ``scenario.checkpoint_every`` days and on the last
        day of a run stopped early, never after the planned last day (nothing is left to resume)."""
        if day >= self.planned_days - 1:
            return False
        return day == self.days - 1 or (day + 1) % self.scenario.checkpoint_every == 0

    def _checkpoint(self, day: int) -> None:
        """Save the day's exposures, and the run's state when due (:mod:`simulator.run.checkpoint`). ``_day`` has
        collected every trained tick before a due checkpoint; on other days their training goes on while the next
        day starts, and their weights are collected when due for publishing (the same weights at the same ticks)."""
        if not self.checkpoints:
            return
        for arm in self.arms:
            save_exposures(self.run_dir, arm.name, day, arm.exposures_of_day(day))
        if not self.checkpoint_due(day):
            return
        self.writer.submit(self.run_dir, Checkpoint(
            day=day, world=self.world.state(), runtime=self.runtime.snapshot(),
            ready=compact_tree(self.runtime.fetch_weights(self.ready)),
            ats_actions=self.ats_actions, n_events=self.n_events, diagnostics=self.diagnostics,
            arms={arm.name: ArmCheckpoint(arm.dynamics.state(), arm.uploads, arm.visits, arm.ats) for arm in self.arms}),
            keep_last=self.keep_last)

    def restore_latest(self) -> int:
        """Load the latest checkpoint (:func:`load_latest_checkpoint`); returns the next day to simulate (the days after
        it that an interrupted run had played are played again)."""
        self.writer.wait()  # a recovery in place reads the checkpoint written last
        checkpoint = load_latest_checkpoint(self.run_dir)
        self.world.load_state(checkpoint.world)
        self.runtime.restore(checkpoint.runtime)
        self.ready, self.ats_actions, self.n_events = expand(checkpoint.ready), checkpoint.ats_actions, checkpoint.n_events
        self.diagnostics = checkpoint.diagnostics
        for arm in self.arms:
            saved = checkpoint.arms[arm.name]
            arm.dynamics.load_state(saved.dynamics)
            arm.uploads, arm.visits, arm.ats = saved.uploads, saved.visits, saved.ats
            arm.exposures = load_exposures(self.run_dir, arm.name, checkpoint.day)
        self.start_day = checkpoint.day + 1
        return self.start_day

    # ------------------------------------------------------------------ run
    def run(self, progress_factory=None) -> SimulationResult:
        try:
            if progress_factory is not None and self.progress:
                with progress_factory() as bar:
                    day_task = bar.add_task("days", total=self.days, completed=self.start_day)
                    tick_task = bar.add_task(f"ticks ({', '.join(self.arm_names)})",
                                             total=(self.days - self.start_day) * self.ticks_per_day)
                    play(self, on_tick=lambda: bar.advance(tick_task), on_day=lambda: bar.advance(day_task))
            else:
                play(self)
        except BaseException:
            self.writer.close(quiet=True)  # the last checkpoint still lands for a resume; the run's error is the one
            raise
        self.writer.close()  # on disk before anyone reads or deletes the checkpoints
        self.runtime.release_arms()  # until now HTTP uploads got 409: the world must know every item it serves
        return self.results()

    def results(self, metrics: MetricsConfig | None = None) -> SimulationResult:
        """The run's metrics over the days played so far (:func:`simulator.run.results.measure`); with ``metrics``,
        the same run read out under another metrics config (e.g. another bootstrap), nothing replayed."""
        scenario = self.scenario if metrics is None else self.scenario._revalidated({"metrics": metrics})
        with self.timer("metrics"):
            result = measure(scenario, self.log, self.arms, self.t0, self.days, self.diagnostics, self.n_events,
                             self.run_dir.as_path())
        return replace(result, timings=self.timings)  # the timings include the metrics just computed
