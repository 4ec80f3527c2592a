"""The options coldsim's Serve deployments carry (no Ray started: the bound applications are inspected)."""

from __future__ import annotations

from simulator.core.config import ArmSpec, ModelConfig
from serving.app import SHUTDOWN_POLL_S, Gateway, arm_apps
from trainers.arm_context import ArmContext, arm_context


def test_idle_replicas_stop_without_serves_two_second_first_wait():
    """Every arm deployment of a run (each shard, with or without placement resources) and the HTTP gateway count
    their ongoing requests every SHUTDOWN_POLL_S when Serve stops them, instead of sleeping Serve's 2 s first."""
    ctx = ArmContext(model=ModelConfig(), slate_size=10, n_item_dense=4, seed=0)
    arms = [(ArmSpec(name=name, share=0.5), arm_context(ctx, i)) for i, name in enumerate(["base", "ihm"])]
    targets = arm_apps("run", arms, shards=2, arm_resources={"ihm": {"node_b": 1}},
                       shard_resources=[{}, {"node_a": 1}])
    configs = [t.target._bound_deployment._deployment_config for t in targets]
    assert len(configs) == 4
    assert SHUTDOWN_POLL_S < 2.0
    assert {c.graceful_shutdown_wait_loop_s for c in configs} == {SHUTDOWN_POLL_S}
    assert Gateway._deployment_config.graceful_shutdown_wait_loop_s == SHUTDOWN_POLL_S
