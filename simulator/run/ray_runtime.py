"""The Ray runtime: Ray Data reads the log, Ray Serve serves the arms, Ray Train trains them online.

Implements :class:`simulator.run.runtime.Runtime`. Ray touchpoints, all here or in the two modules
it starts: (1) ``ray.init`` (local or ``address='auto'``), (2) the Serve app
(:mod:`serving.app`), (3) the TorchTrainer loop (:mod:`trainers.online`), (4) Ray Data day
reads (:mod:`simulator.world.replay`). Every call to the arms is one handle call per arm carrying the
whole tick's batch as arrays; the arms' calls run concurrently.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
import uuid

import ray
from ray import serve

from simulator.core.config import ServeConfig
from simulator.world.replay import RayDataDayReader
from simulator.run.runtime import ComponentLost, RuntimeSpec
from serving.app import APP_NAME, arm_apps, build_app, deployment_name
from serving.arms import arm_tasks
from serving.shards import agreed_diagnostics, merge_parts, owners
from trainers.arm_context import arm_context
from trainers.online import OnlineTrainer, TrainerLost
from trainers.weights import WeightsRef


FOOTER_ACTORS = "RAY_DATA_PARQUET_FOOTER_NUM_ACTORS"
RAY_ENV = {
    # glibc gives every thread its own malloc arena; the Serve replicas and the Train worker run many threads and
    # grow by hundreds of MB of arena slack each (docs/performance.md)
    "MALLOC_ARENA_MAX": "2",
    # Ray Train retries a worker group that took longer than this to start, and a retried group's learners start
    # over blank (trainers.online._Coordinator stops the run then): on a loaded small machine 60 s is too short
    "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "600",
    # Ray Data's Parquet reader lists a read's files through a pool of 32 footer-reading actors by default, worker
    # processes started for a log of one small file per day: with one, the replay's first read took 5.3 s instead of
    # 8.4 s and ~9 CPU-s less on 2 cores (docs/performance.md, "Ray Data's first read"); the driver's environment wins
    FOOTER_ACTORS: os.environ.get(FOOTER_ACTORS, "1"),
}


# Ray's own periodic work that nothing reads on a Ray that coldsim starts itself (no dashboard, no Prometheus): the
# metrics every Ray process records and exports, and the event loops' handler statistics (with the Serve
# controller's interval below: ~20 CPU-s of a 4-day default run's ~520 on 2 cores; docs/performance.md, "Ray's own
# work"). A cluster joined with --address keeps its own configuration; a variable RAY_<key> set in the environment
# wins over these.
LOCAL_SYSTEM_CONFIG = {"enable_metrics_collection": False, "event_stats": False}
# the Serve controller reconciles every 0.1 s by default; coldsim deploys its arms once per run, so 0.5 s only
# delays start-up and recovery by a fraction of a second (RAY_SERVE_CONTROL_LOOP_INTERVAL_S in the environment wins)
SERVE_CONTROLLER_ENV = {"RAY_SERVE_CONTROL_LOOP_INTERVAL_S": "0.5"}


# the GCS address of the Ray that init_ray started in this process, whose processes inherited RAY_ENV and
# SERVE_CONTROLLER_ENV from the environment its raylet started with
_STARTED_HERE: list[str] = []


@contextlib.contextmanager
def _environment(values: dict[str, str]):
    """``values`` in this process's environment for the block (a value already there wins), then as before."""
    saved = {k: os.environ.get(k) for k in values}
    for key, value in values.items():
        os.environ.setdefault(key, value)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)


def _settings(values: dict[str, str]) -> dict[str, str]:
    return {k: os.environ.get(k, v) for k, v in values.items()}


def init_ray(address: str | None = None) -> bool:
    """Start (or join, with ``address``) Ray as coldsim runs use it, unless this process is already connected
    (a driver that started it, or a Ray task running a simulation); returns whether it started it.

    A joined cluster's workers get coldsim's environment (:data:`RAY_ENV`) through the job's ``runtime_env``. A Ray
    started here does not need one: its raylet starts with that environment and every worker inherits it, and a
    job ``runtime_env`` would start each worker through Ray's ``setup_worker.py``, a second Python start and
    ``import ray`` per worker (~0.7 CPU-s each on 2 cores; docs/performance.md, "A run's start")."""
    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    os.environ.setdefault(FOOTER_ACTORS, RAY_ENV[FOOTER_ACTORS])  # where Ray Data plans a read: this process too
    kwargs = dict(include_dashboard=False, log_to_driver=False, ignore_reinit_error=True,
                  configure_logging=True, logging_level="ERROR")
    _STARTED_HERE.clear()
    if address:
        ray.init(address=address, runtime_env={"env_vars": _settings(RAY_ENV)}, **kwargs)
    else:
        system_config = {k: v for k, v in LOCAL_SYSTEM_CONFIG.items() if f"RAY_{k}" not in os.environ}
        with _environment(RAY_ENV | SERVE_CONTROLLER_ENV):
            ray.init(num_cpus=max(2, os.cpu_count() or 2), _system_config=system_config, **kwargs)
        _STARTED_HERE.append(ray.get_runtime_context().gcs_address)
    return True


def start_serve(http_options: dict) -> None:
    """``serve.start`` with coldsim's Serve controller settings (:data:`SERVE_CONTROLLER_ENV`); they apply when this
    call creates the controller, not to one already running on the cluster. On a Ray that :func:`init_ray` started
    the controller inherits them from the raylet's environment; elsewhere they travel in its ``runtime_env``."""
    inherited = ray.is_initialized() and _STARTED_HERE[:1] == [ray.get_runtime_context().gcs_address]
    options = {} if inherited else {"runtime_env": {"env_vars": _settings(SERVE_CONTROLLER_ENV)}}
    serve.start(http_options=http_options, controller_options=options)


_LOST = (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError)


@contextlib.contextmanager
def _trainer_lost():
    try:
        yield
    except TrainerLost as exc:
        raise ComponentLost(str(exc)) from exc


class RayRuntime:
    """Arms as Serve deployments (one per shard of an arm, :mod:`serving.shards`), learners in one long-lived Ray
    Train TorchTrainer."""

    def __init__(self, spec: RuntimeSpec, address: str | None = None, serve_cfg: ServeConfig | None = None,
                 http: bool = False):
        self.spec = spec
        self.names = [a.name for a in spec.arms]
        self._owns_ray = init_ray(address)
        for name in ("ray.data", "ray.serve", "ray.train"):  # the CLI shows its own progress
            logging.getLogger(name).setLevel(logging.ERROR)
        cfg = serve_cfg or ServeConfig()
        self.http = http or cfg.http
        http_options = {"host": cfg.host, "port": cfg.port} if self.http else {"location": "NoServer"}
        start_serve(http_options)
        # a run-unique app name: several runs can share a cluster's Serve instance
        self.app_name = f"{APP_NAME}-{uuid.uuid4().hex[:8]}"
        # driven: HTTP clients get 409 on uploads and day ends until release_arms (docs/serving.md)
        self.shards = spec.arm_replicas
        arms = [(a, arm_context(spec.arm_ctx, i)) for i, a in enumerate(spec.arms)]
        placement = dict(arm_resources=cfg.arm_resources, shards=self.shards, shard_resources=cfg.shard_resources)
        if self.http:  # one application: the gateway (HTTP ingress) in front of the arm deployments
            serve.run(build_app(arms, driven=True, **placement), name=self.app_name, route_prefix="/")
            self.app_names = [self.app_name]
            self.handles = {a: [serve.get_deployment_handle(deployment_name(a, k), app_name=self.app_name)
                                for k in range(self.shards)] for a in self.names}
        else:  # no HTTP: an application per arm deployment, no gateway replica idling beside them
            targets = arm_apps(self.app_name, arms, driven=True, **placement)
            self.app_names = [t.name for t in targets]
            handles = iter(serve.run_many(targets))
            self.handles = {a: [next(handles) for _ in range(self.shards)] for a in self.names}
        self._incarnations = self._tokens()
        self.url = f"http://{cfg.host}:{cfg.port}" if self.http else None
        self.reader = RayDataDayReader(spec.events_root, spec.t0)
        # Ray Train's storage beside the run's files: a URI every node reaches on a cluster without a shared disk
        self._storage = (spec.storage / "train").uri if spec.storage is not None else tempfile.mkdtemp(prefix="coldsim-train-")
        self.trainer = self._start_trainer()

    def read_day(self, day: int):
        return self.reader.read_day(day)

    def _every_shard(self, method: str, args: dict[str, tuple]) -> dict[str, list]:
        """``method`` on every shard of the arms in ``args``, all at once; arm -> the shards' answers."""
        futures = {arm: [getattr(h, method).remote(*a) for h in self.handles[arm]] for arm, a in args.items()}
        return {arm: [self._answer(f, arm, method) for f in fs] for arm, fs in futures.items()}

    def _tokens(self) -> dict[str, list[str]]:
        """Every shard's incarnation token (which replica process holds it), by arm."""
        return self._every_shard("incarnation_token", {arm: () for arm in self.names})

    def _start_trainer(self) -> OnlineTrainer:
        spec = self.spec
        return OnlineTrainer(spec.arm_ctx, spec.train, list(spec.arms), spec.control, self._storage, arm_tasks)

    def _answer(self, future, arm: str, method: str):
        """A Serve handle call's answer. :class:`ComponentLost` when the replica died under it, when it cannot
        fetch weights a dead Train worker made, or when it failed because it is a blank replacement (e.g. item ids
        it never saw: its incarnation token changed)."""
        try:
            return future.result()
        except _LOST as exc:
            raise ComponentLost(f"the Serve replica of arm '{arm}' died during '{method}' ({type(exc).__name__})") from exc
        except ray.exceptions.RayTaskError as exc:
            if isinstance(exc.cause, ray.exceptions.ObjectLostError):  # weights put by a Train worker that died
                raise ComponentLost(f"arm '{arm}' could not fetch its weights in '{method}': the Train worker that "
                                    "made them died") from exc
            if method != "incarnation_token" and hasattr(self, "_incarnations"):
                self.check_arms()  # a blank replacement fails on what the arm knew: that is the loss, not the error
            raise

    def _all(self, method: str, args: dict[str, tuple]) -> dict:
        """``method`` on every shard; arm -> shard 0's answer (every shard holds the same state)."""
        return {arm: answers[0] for arm, answers in self._every_shard(method, args).items()}

    def upload(self, items):
        self._all("upload", {arm: (b,) for arm, b in items.items()})

    def recommend(self, requests):
        if self.shards == 1:
            return self._all("recommend", requests)
        # serving.shards: every shard computes its users' slates of the batch, then every shard commits them all
        own = {arm: owners(users, self.shards) for arm, (users, _, _) in requests.items()}
        parts = {arm: [h.serve_part.remote(users, ts, seed, rows) for h, rows in zip(self.handles[arm], own[arm])]
                 for arm, (users, ts, seed) in requests.items()}
        slates, commits = {}, []
        for arm, futures in parts.items():
            users, ts, _ = requests[arm]
            slates[arm], effects, nonfinite = merge_parts([self._answer(f, arm, "serve_part") for f in futures], own[arm],
                                                          len(users))
            commits += [(arm, h.commit.remote(users, ts, slates[arm].item_ids, slates[arm].channel, effects, nonfinite))
                        for h in self.handles[arm]]
        for arm, future in commits:
            self._answer(future, arm, "commit")
        return slates

    def feedback(self, events):
        self._all("feedback", events)

    def submit_training(self, tick_id, batches):
        self.trainer.submit(tick_id, batches)

    def collect_weights(self, tick_id):
        with _trainer_lost():
            return self.trainer.collect(tick_id)

    def fetch_weights(self, ready: dict[int, dict]) -> dict[int, dict]:
        """The collected weights with every WeightsRef fetched (for a checkpoint); a tick's object once."""
        fetched: dict = {}
        out = {}
        for tick, per_arm in ready.items():
            out[tick] = {}
            for arm, (version, weights, stats) in per_arm.items():
                if isinstance(weights, WeightsRef):
                    for ref in weights.refs:
                        if ref.hex() not in fetched:
                            try:
                                fetched[ref.hex()] = ray.get(ref)
                            except ray.exceptions.ObjectLostError as exc:
                                raise ComponentLost("a tick's weights were lost with the Train worker that made "
                                                    "them") from exc
                    weights = weights.pick([fetched[ref.hex()] for ref in weights.refs])
                out[tick][arm] = (version, weights, stats)
        return out

    def publish(self, weights, ts):
        self._all("set_weights", {arm: (v, w, ts) for arm, (v, w) in weights.items()})

    def check_arms(self) -> None:
        """Raise if Serve restarted an arm's replica since the run began: the new one holds a blank arm (no items,
        no features, no weights), and a run must not go on with it."""
        now = self._tokens()
        restarted = sorted(arm for arm in self.names if now[arm] != self._incarnations[arm])
        if restarted:
            raise ComponentLost(f"the Serve replica of arm(s) {restarted} was restarted during the run and lost the "
                                "arm's state")

    def end_day(self, ts):
        out = self._every_shard("end_day", {arm: (ts,) for arm in self.names})
        agreed = {arm: agreed_diagnostics(arm, ts, outputs) for arm, outputs in out.items()}
        self.check_arms()  # never a blank replica's diagnostics
        return agreed

    def release_arms(self):
        self._all("release", {arm: () for arm in self.names})

    def snapshot(self):
        with _trainer_lost():
            learners = self.trainer.request_snapshot()  # the Train worker serialises while the replicas do
        futures = {arm: self.handles[arm][0].snapshot.remote() for arm in self.names}  # every shard holds the same
        policies = {arm: self._answer(f, arm, "snapshot") for arm, f in futures.items()}
        self.check_arms()  # a replica restarted before its snapshot was taken would checkpoint a blank arm
        with _trainer_lost():
            return {"policies": policies, "learners": learners()}

    def restore(self, state):
        self._all("restore", {arm: (state["policies"][arm],) for arm in self.names})
        with _trainer_lost():
            self.trainer.restore(state["learners"])

    def recover(self, timeout_s: float = 300.0) -> None:
        """After :class:`ComponentLost`: wait until every arm shard answers (Serve replaces a dead replica with a
        blank one) and take the shards' new incarnations; replace the trainer if its learners are gone. The
        driver then restores every arm and learner from the last checkpoint."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self._incarnations = self._tokens()
                break
            except ComponentLost:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1.0)
        try:
            alive = self.trainer.alive
        except Exception:  # its coordinator is gone too
            alive = False
        if not alive:
            try:
                self.trainer.abandon()
            except Exception:  # a dead trainer may not take the stop command
                pass
            self.trainer = self._start_trainer()

    def stats(self) -> dict:
        """Shard 0's stats of each arm, with ``shard_nodes``: the node of each shard."""
        out = {}
        for arm, shards in self._every_shard("stats", {arm: () for arm in self.names}).items():
            out[arm] = dict(shards[0], shard_nodes=[shard["node_id"] for shard in shards],
                            shard_digests=[shard["base_weights_digest"] for shard in shards])
        return out

    def shutdown(self):
        """Stop the trainer and the arms' apps at the same time; then Ray, when this runtime started it. Each step
        runs even when an earlier one failed."""
        with contextlib.ExitStack() as steps:  # its callbacks run last-in first-out
            if self._owns_ray:  # no serve.shutdown() first: killing the controller mid-call only adds noise
                steps.callback(ray.shutdown)
            steps.callback(self._delete_apps, wait=True)
            # waited for even when Ray ends next: the online loop's thread, blocked in its wait for Ray Train's
            # controller, does not return when Ray shuts down under it (docs/performance.md, "A run's start")
            steps.callback(self.trainer.stop)
            self._delete_apps(wait=False)  # the replicas' graceful stops run while the trainer stops

    def _delete_apps(self, wait: bool, timeout_s: float = 60.0) -> None:
        """Delete every arm's app at once (``serve.delete`` of one waits ~3 s for its replicas' graceful stop, one
        app after another 12 s for four arms); with ``wait``, until Serve lists none of them. Deleting an app that
        is already being deleted changes nothing in Serve, so the waiting call deletes again: it also covers a first
        call that failed."""
        for name in self.app_names:
            serve.delete(name, _blocking=False)
        deadline = time.monotonic() + timeout_s
        while wait and set(self.app_names) & set(serve.status().applications):
            if time.monotonic() > deadline:
                raise TimeoutError(f"Serve did not delete the arms' apps within {timeout_s:.0f} s: {self.app_names}")
            time.sleep(0.1)

