"""Ray Serve application: one stateful deployment per arm wrapping :class:`ArmPolicy`, plus a FastAPI ingress.

Each arm is a single replica (its feature store, index and weights are state), or with ``shards`` > 1 one
replica per shard, each holding the whole arm and serving the users it owns (:mod:`serving.shards`). The simulator driver calls the arm deployments through handles
with a whole tick's requests as arrays; external HTTP clients go through the ingress, whose
recommend calls are merged across concurrent clients with ``@serve.batch``. The ingress app is
:func:`serving.http.build_api`, the same app the in-process backend serves; what a client may do
to an arm (uploads and day ends only while no simulation drives it) is decided by the arm's
:class:`~serving.http.ArmEndpoint`. A simulation without HTTP deploys the arm deployments without the ingress,
each as an application of its own (:func:`arm_apps`).

Ray touchpoints: the two ``@serve.deployment`` classes, :func:`build_app` and :func:`arm_apps`.
"""

import asyncio
import os
import uuid

import numpy as np
from ray import serve
from ray.exceptions import RayTaskError

from simulator.core.config import ArmSpec
from serving.arms import arm_kind, build_arm
from trainers.arm_context import ArmContext
from trainers.weights import WeightsRef
from serving.http import MAX_BODY_BYTES, ArmEndpoint, build_api
from serving.shards import agreed_diagnostics, merge_parts, owners
from serving.stack import ServedPart, Slates

APP_NAME = "coldsim"
# Requests one replica may hold at once. The arm's bound equals its @serve.batch max_batch_size so a full batch
# can form; the gateway only awaits arm handles, so it must admit at least a full batch for every arm: with
# Serve's default of 5 the proxy's router backed off, batches never exceeded 5 and 64 concurrent clients got
# 6x fewer requests/s than one sequential client (benchmarks/bench_serve_overhead.py, docs/performance.md).
ARM_MAX_ONGOING = 64
GATEWAY_MAX_ONGOING = 1024
# a replica Serve stops sleeps this long before it first counts its ongoing requests (Serve's default 2 s): every
# run's end waited that for its idle arms; a replica with requests in flight still waits for them all
# (docs/performance.md, "A run's end")
SHUTDOWN_POLL_S = 0.1


def deployment_name(arm: str, shard: int = 0) -> str:
    """Shard ``shard`` of the arm's deployments (a sharded arm has one deployment per shard, :mod:`serving.shards`)."""
    return f"arm_{arm}" if shard == 0 else f"arm_{arm}_shard{shard}"


@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0}, max_ongoing_requests=ARM_MAX_ONGOING,
                  graceful_shutdown_wait_loop_s=SHUTDOWN_POLL_S)
class ArmDeployment:
    """One arm's serving side: the plain policy, batching for HTTP traffic, and the rules for HTTP clients.

    ``driven``: a simulation drives the arm (HTTP uploads and day ends get 409) until it calls ``release``.
    """

    def __init__(self, spec: ArmSpec, ctx: ArmContext, driven: bool = False):
        import torch

        torch.set_num_threads(1)  # the same arithmetic as the in-process runtime
        self.incarnation = uuid.uuid4().hex  # a replica Serve restarts has another, and a blank arm (incarnation())
        self.policy = build_arm(spec, ctx)
        self.endpoint = ArmEndpoint(spec.name, self.policy, driven, truth_matched=arm_kind(spec).oracle)

    # ---- the driver's calls
    async def upload(self, items: dict[str, np.ndarray]) -> dict[int, list[int]]:
        self.policy.upload_items(items["item_id"], items["creator_id"], items["upload_ts"], items["category"], items["dense"],
                                 oracle=(items["oracle_users"], items["oracle_scores"]) if "oracle_users" in items else None)
        return self.policy.last_targets

    async def recommend(self, user_ids: np.ndarray, ts: np.ndarray, seed: int) -> Slates:
        return self.policy.recommend(user_ids, ts, seed)

    async def serve_part(self, user_ids: np.ndarray, ts: np.ndarray, seed: int, own: np.ndarray) -> ServedPart:
        """A sharded arm's first step: this shard's slates of the batch (serving.shards)."""
        return self.policy.serve_part(user_ids, ts, seed, own)

    async def commit(self, user_ids, ts, item_ids, channel, effects: list[dict], nonfinite: int) -> None:
        """A sharded arm's second step: the whole batch's slates and every shard's effects."""
        self.policy.commit(user_ids, ts, item_ids, channel, effects, nonfinite)

    async def feedback(self, user_ids, item_ids, ts, labels) -> None:
        self.policy.feedback(user_ids, item_ids, ts, labels)

    async def set_weights(self, version: int, weights: "dict | WeightsRef", ts: int | None) -> int:
        if isinstance(weights, WeightsRef):  # fetched from the object store here, never through the driver
            weights = weights.pick([await ref for ref in weights.refs])
        self.policy.set_weights(version, weights, ts)
        return version

    async def end_day(self, ts: int) -> dict[str, float]:
        return self.endpoint.end_day(ts, driver=True)

    async def release(self) -> None:
        self.endpoint.release()

    async def incarnation_token(self) -> str:
        """Which replica process holds the arm: the driver compares it tick after tick (RayRuntime.check_arms)."""
        return self.incarnation

    async def snapshot(self) -> bytes:
        return self.policy.snapshot()

    async def restore(self, data: bytes) -> None:
        self.policy.restore(data)

    async def stats(self) -> dict:
        import ray

        return {"items": self.policy.store.n_items, "users": len(self.policy.store.users),
                "index": len(self.policy.index), "weights_version": self.policy.weights_version,
                "base_weights_digest": self.policy.base_weights_digest(),
                "node_id": ray.get_runtime_context().get_node_id(),  # where the replica runs (multi-node tests)
                "pid": os.getpid()}

    # ---- HTTP clients' calls (through the gateway)
    @serve.batch(max_batch_size=ARM_MAX_ONGOING, batch_wait_timeout_s=0.005)
    async def recommend_batched(self, requests: list[tuple[np.ndarray, np.ndarray, int]]) -> list[Slates]:
        """Concurrent HTTP requests merged into one policy call, then split back."""
        users = np.concatenate([r[0] for r in requests])
        ts = np.concatenate([r[1] for r in requests])
        return _split(self.policy.recommend(users, ts, requests[0][2]), requests)

    async def recommend_http(self, user_ids: np.ndarray, ts: np.ndarray, seed: int) -> Slates:
        return await self.recommend_batched((user_ids, ts, seed))

    async def upload_http(self, items: dict[str, np.ndarray]) -> dict[int, list[int]]:
        return self.endpoint.upload(items)

    async def feedback_http(self, user_ids, item_ids, ts, labels) -> None:
        self.endpoint.feedback(user_ids, item_ids, ts, labels)

    async def end_day_http(self, ts: int) -> dict[str, float]:
        return self.endpoint.end_day(ts)

    async def info_http(self) -> dict:
        return self.endpoint.info()


def _split(merged: Slates, requests: list[tuple[np.ndarray, np.ndarray, int]]) -> list[Slates]:
    """A merged batch's slates cut back into the requests' (their user arrays, in order)."""
    ends = np.cumsum([len(users) for users, _, _ in requests]).tolist()
    return [merged.rows(a, b) for a, b in zip([0] + ends[:-1], ends)]


async def _remote(handle, method: str, *args):
    """A deployment call whose replica error comes back as its own type (a ClientError stays a ClientError)."""
    try:
        return await getattr(handle, method).remote(*args)
    except RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        raise (cause if isinstance(cause, Exception) else exc) from None


class _ShardedArm:
    """HTTP clients' calls to an arm served by several shards: concurrent recommend requests are merged (as one
    replica's ``recommend_batched`` does) and served in the two steps of :mod:`serving.shards`; every call holds
    the arm's lock, so every shard sees the same calls in the same order."""

    def __init__(self, handles: list):
        self.handles = handles
        self.lock = asyncio.Lock()

    async def broadcast(self, method: str, *args) -> list:
        async with self.lock:
            return list(await asyncio.gather(*(_remote(h, method, *args) for h in self.handles)))

    @serve.batch(max_batch_size=ARM_MAX_ONGOING, batch_wait_timeout_s=0.005)
    async def recommend(self, requests: list[tuple[np.ndarray, np.ndarray, int]]) -> list[Slates]:
        users = np.concatenate([r[0] for r in requests]).astype(np.int64)
        ts = np.concatenate([r[1] for r in requests]).astype(np.int64)
        own = owners(users, len(self.handles))
        async with self.lock:
            parts = await asyncio.gather(*(_remote(h, "serve_part", users, ts, requests[0][2], rows)
                                           for h, rows in zip(self.handles, own)))
            merged, effects, nonfinite = merge_parts(list(parts), own, len(users))
            await asyncio.gather(*(_remote(h, "commit", users, ts, merged.item_ids, merged.channel, effects, nonfinite)
                                   for h in self.handles))
        return _split(merged, requests)


class _HandleBackend:
    """The HTTP handlers' backend over deployment handles (a list per arm: its shards); replica errors come back as
    their own type."""

    def __init__(self, handles: dict[str, list]):
        self.handles = handles
        self.sharded = {arm: _ShardedArm(shards) for arm, shards in handles.items() if len(shards) > 1}

    def arm_names(self) -> list[str]:
        return list(self.handles)

    async def _call(self, arm: str, method: str, *args):
        if arm in self.sharded:  # every shard, in the same order; they answer alike: shard 0's answer
            return (await self.sharded[arm].broadcast(method, *args))[0]
        return await _remote(self.handles[arm][0], method, *args)

    async def info(self, arm):
        return await _remote(self.handles[arm][0], "info_http")

    async def recommend(self, arm, user_ids, ts, seed):
        if arm in self.sharded:
            return await self.sharded[arm].recommend((np.asarray(user_ids), np.asarray(ts), seed))
        return await self._call(arm, "recommend_http", user_ids, ts, seed)

    async def upload(self, arm, items):
        return await self._call(arm, "upload_http", items)

    async def feedback(self, arm, user_ids, item_ids, ts, labels):
        await self._call(arm, "feedback_http", user_ids, item_ids, ts, labels)

    async def end_day(self, arm, ts):
        if arm in self.sharded:
            return agreed_diagnostics(arm, ts, await self.sharded[arm].broadcast("end_day_http", ts))
        return await self._call(arm, "end_day_http", ts)


@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0}, max_ongoing_requests=GATEWAY_MAX_ONGOING,
                  graceful_shutdown_wait_loop_s=SHUTDOWN_POLL_S)
@serve.ingress()
class Gateway:
    """HTTP ingress (bound to 127.0.0.1 by default): :func:`serving.http.build_api` over the arm deployments."""

    def __init__(self, arm_handles: dict, max_body_bytes: int = MAX_BODY_BYTES):
        self.backend = _HandleBackend(arm_handles)
        self.max_body_bytes = max_body_bytes

    def __serve_build_asgi_app__(self):
        return build_api(self.backend, self.max_body_bytes)


def arm_deployments(arms: list[tuple[ArmSpec, ArmContext]], driven: bool = False,
                    arm_resources: dict[str, dict[str, float]] | None = None, shards: int = 1,
                    shard_resources: list[dict[str, float]] | None = None) -> dict[str, list]:
    """Arm -> its ``shards`` bound arm deployments (named :func:`deployment_name`).

    ``driven``: a simulation drives the arms (the Ray runtime passes True and releases them after the run);
    False serves arms on their own, which take uploads and day ends over HTTP. ``arm_resources``: arm -> extra Ray
    resources its replicas require (``ServeConfig.arm_resources``: arms on chosen nodes); ``shard_resources[k]``:
    what shard k of every arm requires besides (``ServeConfig.shard_resources``)."""
    def options(spec: ArmSpec, shard: int) -> dict:
        resources = dict((arm_resources or {}).get(spec.name, {}))
        if shard_resources:
            for name, amount in shard_resources[shard].items():
                resources[name] = resources.get(name, 0.0) + amount
        return {"ray_actor_options": {"num_cpus": 0, "resources": resources}} if resources else {}

    return {spec.name: [ArmDeployment.options(name=deployment_name(spec.name, k), **options(spec, k))
                        .bind(spec, ctx, driven) for k in range(shards)]
            for spec, ctx in arms}


def build_app(arms: list[tuple[ArmSpec, ArmContext]], driven: bool = False, max_body_bytes: int = MAX_BODY_BYTES,
              arm_resources: dict[str, dict[str, float]] | None = None, shards: int = 1,
              shard_resources: list[dict[str, float]] | None = None):
    """The Serve application of HTTP use: ``shards`` arm deployments per (spec, context) (:func:`arm_deployments`,
    the same arguments) and the gateway in front. A simulation without HTTP runs each arm deployment as an
    application of its own instead (:func:`arm_apps`): no gateway replica idles beside the arms."""
    return Gateway.bind(arm_deployments(arms, driven, arm_resources, shards, shard_resources), max_body_bytes)


def arm_apps(app_name: str, arms: list[tuple[ArmSpec, ArmContext]], driven: bool = False,
             arm_resources: dict[str, dict[str, float]] | None = None, shards: int = 1,
             shard_resources: list[dict[str, float]] | None = None) -> list[serve.RunTarget]:
    """Every arm deployment (:func:`arm_deployments`, the same arguments) as an application of its own, named
    ``{app_name}-{deployment}``, without a route: for ``serve.run_many``, whose handles (the applications'
    ingresses) are the arm deployments', in the order of ``arms`` and their shards."""
    deployments = arm_deployments(arms, driven, arm_resources, shards, shard_resources)
    return [serve.RunTarget(target=bound, name=f"{app_name}-{deployment_name(arm, k)}", route_prefix=None)
            for arm, shard_list in deployments.items() for k, bound in enumerate(shard_list)]
