"""A run on a multi-node Ray cluster (two nodes on this machine, ``ray.cluster_utils.Cluster``), its files on a
storage URI: the arms' replicas spread over the nodes, the same metrics as the in-process run."""

from __future__ import annotations

import pytest
import ray
from ray.cluster_utils import Cluster

from scenarios import get_scenario
from simulator.core.storage import Location
from simulator.run.session import RunOptions, run_scenario

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def cluster():
    nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": 200 * 2**20})
    nodes.add_node(num_cpus=1, object_store_memory=200 * 2**20)
    nodes.wait_for_nodes()
    ray.init(address=nodes.address, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
             runtime_env={"env_vars": {"MALLOC_ARENA_MAX": "2"}})
    yield nodes
    ray.shutdown()
    nodes.shutdown()


def test_two_node_run_on_a_storage_uri_equals_the_in_process_run(cluster, tmp_path):
    scenario = get_scenario("coldstart_ab").at_scale("tiny").with_overrides(days=2)
    local = run_scenario(scenario, RunOptions(scenario=scenario.name, runtime="local", run_root=str(tmp_path / "local")),
                         tracking_uri=None)
    seen: dict = {}
    storage = f"file://{tmp_path}/store"
    out = run_scenario(scenario, RunOptions(scenario=scenario.name, runtime="ray", run_root=storage),
                       tracking_uri=None, before_shutdown=lambda sim: seen.update(stats=sim.runtime.stats()),
                       stop_after_day=None)
    assert len({node["NodeID"] for node in ray.nodes() if node["Alive"]}) == 2
    nodes = {stats["node_id"] for stats in seen["stats"].values()}
    assert len(nodes) == 2, f"the four arms' replicas all ran on one node: {seen['stats']}"
    assert out.result.overall == local.result.overall
    for arm, daily in local.result.daily.items():
        assert out.result.daily[arm].equals(daily), arm
    run_dir = Location.of(out.run_dir)
    assert run_dir.uri.startswith(storage) and (run_dir / "log" / "events").exists()
    assert (run_dir / "train").exists()  # Ray Train's storage is on the run's storage URI too
