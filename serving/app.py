"""Ray Serve application: one stateful deployment per arm wrapping :class:`ArmPolicy`, plus a FastAPI ingress.

Each arm is a single replica (its feature store, index and weights are state; a second replica
would need a shared store). The simulator driver calls the arm deployments through handles
with a whole tick's requests as arrays; external HTTP clients go through the ingress, whose
recommend calls are merged across concurrent clients with ``@serve.batch``. The ingress app is
:func:`serving.http.build_api`, the same app the in-process backend serves; what a client may do
to an arm (uploads and day ends only while no simulation drives it) is decided by the arm's
:class:`~serving.http.ArmEndpoint`.

Ray touchpoints: the two ``@serve.deployment`` classes and :func:`build_app`.
"""


import uuid

import numpy as np
from ray import serve
from ray.exceptions import RayTaskError

from simulator.core.config import ArmSpec
from serving.arms import arm_kind, build_arm
from trainers.arm_context import ArmContext
from trainers.weights import WeightsRef
from serving.http import MAX_BODY_BYTES, ArmEndpoint, build_api
from serving.stack import Slates

APP_NAME = "coldsim"
# Requests one replica may hold at once. The arm's bound equals its @serve.batch max_batch_size so a full batch
# can form; the gateway only awaits arm handles, so it must admit at least a full batch for every arm: with
# Serve's default of 5 the proxy's router backed off, batches never exceeded 5 and 64 concurrent clients got
# 6x fewer requests/s than one sequential client (benchmarks/bench_serve_overhead.py, docs/performance.md).
ARM_MAX_ONGOING = 64
GATEWAY_MAX_ONGOING = 1024


def deployment_name(arm: str) -> str:
    return f"arm_{arm}"


@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0}, max_ongoing_requests=ARM_MAX_ONGOING)
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

    async def feedback(self, user_ids, item_ids, ts, labels) -> None:
        self.policy.feedback(user_ids, item_ids, ts, labels)

    async def set_weights(self, version: int, weights: "dict | WeightsRef", ts: int | None) -> int:
        if isinstance(weights, WeightsRef):  # fetched from the object store here, never through the driver
            weights = weights.pick(await weights.ref)
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
                "node_id": ray.get_runtime_context().get_node_id()}  # where the replica runs (multi-node tests)

    # ---- HTTP clients' calls (through the gateway)
    @serve.batch(max_batch_size=ARM_MAX_ONGOING, batch_wait_timeout_s=0.005)
    async def recommend_batched(self, requests: list[tuple[np.ndarray, np.ndarray, int]]) -> list[Slates]:
        """Concurrent HTTP requests merged into one policy call, then split back."""
        users = np.concatenate([r[0] for r in requests])
        ts = np.concatenate([r[1] for r in requests])
        merged = self.policy.recommend(users, ts, requests[0][2])
        out, a = [], 0
        for u, _, _ in requests:
            out.append(merged.rows(a, a + len(u)))
            a += len(u)
        return out

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


class _HandleBackend:
    """The HTTP handlers' backend over deployment handles; replica errors come back as their own type."""

    def __init__(self, handles: dict):
        self.handles = handles

    def arm_names(self) -> list[str]:
        return list(self.handles)

    async def _call(self, arm: str, method: str, *args):
        try:
            return await getattr(self.handles[arm], method).remote(*args)
        except RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            raise (cause if isinstance(cause, Exception) else exc) from None

    async def info(self, arm):
        return await self._call(arm, "info_http")

    async def recommend(self, arm, user_ids, ts, seed):
        return await self._call(arm, "recommend_http", user_ids, ts, seed)

    async def upload(self, arm, items):
        return await self._call(arm, "upload_http", items)

    async def feedback(self, arm, user_ids, item_ids, ts, labels):
        await self._call(arm, "feedback_http", user_ids, item_ids, ts, labels)

    async def end_day(self, arm, ts):
        return await self._call(arm, "end_day_http", ts)


@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0}, max_ongoing_requests=GATEWAY_MAX_ONGOING)
@serve.ingress()
class Gateway:
    """HTTP ingress (bound to 127.0.0.1 by default): :func:`serving.http.build_api` over the arm deployments."""

    def __init__(self, arm_handles: dict, max_body_bytes: int = MAX_BODY_BYTES):
        self.backend = _HandleBackend(arm_handles)
        self.max_body_bytes = max_body_bytes

    def __serve_build_asgi_app__(self):
        return build_api(self.backend, self.max_body_bytes)


def build_app(arms: list[tuple[ArmSpec, ArmContext]], driven: bool = False, max_body_bytes: int = MAX_BODY_BYTES,
              arm_resources: dict[str, dict[str, float]] | None = None):
    """The Serve application: an arm deployment per (spec, context) and the gateway in front.

    ``driven``: a simulation drives the arms (the Ray runtime passes True and releases them after the run);
    False serves arms on their own, which take uploads and day ends over HTTP. ``arm_resources``: arm -> extra Ray
    resources its replica requires (``ServeConfig.arm_resources``: arms on chosen nodes)."""
    def options(spec: ArmSpec) -> dict:
        resources = (arm_resources or {}).get(spec.name)
        return {"ray_actor_options": {"num_cpus": 0, "resources": dict(resources)}} if resources else {}

    handles = {spec.name: ArmDeployment.options(name=deployment_name(spec.name), **options(spec)).bind(spec, ctx, driven)
               for spec, ctx in arms}
    return Gateway.bind(handles, max_body_bytes)
