"""A run on a multi-node Ray cluster (two nodes on this machine, ``ray.cluster_utils.Cluster``), its files on a
storage URI: the arms' replicas spread over the nodes, the learners over two Train workers side by side, the same
metrics as the in-process run."""

from __future__ import annotations

import os

import pytest
import ray
from ray.cluster_utils import Cluster

from scenarios import get_scenario
from simulator.core.config import ServeConfig
from simulator.core.storage import Location
from simulator.run.ray_runtime import RAY_ENV
from simulator.run.session import RunOptions, run_scenario

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def cluster():
    nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": 200 * 2**20,
                                                          "resources": {"arms_a": 4}})
    nodes.add_node(num_cpus=1, object_store_memory=200 * 2**20, resources={"arms_b": 4})
    nodes.wait_for_nodes()
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    ray.init(address=nodes.address, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
             runtime_env={"env_vars": RAY_ENV})
    yield nodes
    ray.shutdown()
    nodes.shutdown()


@pytest.fixture(scope="module")
def scenario():
    """Two arms on each node (ServeConfig.arm_resources: each node offers its own custom resource)."""
    tiny = get_scenario("coldstart_ab").at_scale("tiny").with_overrides(days=2)
    placement = {"base": {"arms_a": 1}, "next_user": {"arms_b": 1}, "dualrec_v5": {"arms_a": 1}, "ihm": {"arms_b": 1}}
    return tiny.model_copy(update={"serve": ServeConfig(arm_resources=placement)})


def _ray_run(scenario, run_root: str, workers: int = 1, placement: str = "data_parallel"):
    """A Ray-runtime run on the cluster, its arms' stats, its Train workers' process ids (rank -> pid) and the Serve
    deployments running, taken while the run's applications are up. The arms' stats carry the run's recoveries in
    place (``recoveries``): a failure below then says whether a component was lost on the way."""
    seen: dict = {}

    def probe(sim):
        from ray import serve

        seen.update(stats={arm: s | {"recoveries": sim.recoveries} for arm, s in sim.runtime.stats().items()},
                    train_pids=sim.runtime.trainer.worker_pids(),
                    deployments={d for app in serve.status().applications.values() for d in app.deployments})

    opts = RunOptions(scenario=scenario.name, runtime="ray", run_root=run_root,
                      overrides={"train.num_workers": workers, "train.cpus_per_worker": 0.5,
                                 "train.placement": placement})
    out = run_scenario(scenario, opts, tracking_uri=None, before_shutdown=probe)
    return out, seen["stats"], seen["train_pids"], seen["deployments"]


@pytest.fixture(scope="module")
def one_worker(cluster, scenario, tmp_path_factory):
    """Two Train workers with ``train.placement='by_learner'``: the shared base learner alone on one, the arms'
    strategy learners on the other, each trained as in one process, so the run is one worker's (the reference of
    the DDP test below) and the in-process run's."""
    storage = f"file://{tmp_path_factory.mktemp('store')}"
    return storage, *_ray_run(scenario, storage, workers=2, placement="by_learner")


@pytest.fixture(scope="module")
def local(scenario, tmp_path_factory):
    """The in-process run, one shard per arm: the reference."""
    return run_scenario(scenario, RunOptions(scenario=scenario.name, runtime="local",
                                             run_root=str(tmp_path_factory.mktemp("local"))), tracking_uri=None)


def test_two_node_run_on_a_storage_uri_equals_the_in_process_run(one_worker, scenario, local):
    storage, out, stats, train_pids, deployments = one_worker
    assert len({node["NodeID"] for node in ray.nodes() if node["Alive"]}) == 2
    assert len(set(train_pids.values())) == 2  # the learners trained in two processes
    assert deployments == {f"arm_{arm}" for arm in stats}  # no HTTP, no gateway replica beside the arms
    assert stats["base"]["node_id"] == stats["dualrec_v5"]["node_id"] != stats["next_user"]["node_id"]
    assert stats["next_user"]["node_id"] == stats["ihm"]["node_id"]  # placed as serve.arm_resources says
    assert out.result.overall == local.result.overall, f"recoveries in place: {stats['base']['recoveries']}"
    for arm, daily in local.result.daily.items():
        assert out.result.daily[arm].equals(daily), arm
    run_dir = Location.of(out.run_dir)
    assert run_dir.uri.startswith(storage) and (run_dir / "log" / "events").exists()
    assert (run_dir / "train").exists()  # Ray Train's storage is on the run's storage URI too


@pytest.mark.heavy  # keeps CI under 30 minutes; DDP itself is tested in CI by tests/trainers/test_data_parallel.py
def test_two_train_workers_share_one_base_model_and_stay_close_to_one(one_worker, scenario, tmp_path):
    """train.num_workers=2 on the two nodes: DDP over the shared base models, the arms' strategy learners placed
    on the workers round-robin. Every arm is served the same base weights (its worker's replica of one model),
    every arm's learner published, and the metrics stay close to one worker's (not equal: each worker's
    two-tower sees in-batch negatives from its share only; measured at most 4.7 % apart on
    interactions_per_exposure, docs/architecture.md, 'Data-parallel training')."""
    _, one, one_stats, _, _ = one_worker
    two, two_stats, _, _ = _ray_run(scenario, str(tmp_path / "w2"), workers=2)
    for stats in (one_stats, two_stats):
        assert len({arm["base_weights_digest"] for arm in stats.values()}) == 1, stats  # one base model for all arms
        assert min(arm["weights_version"] for arm in stats.values()) >= 2, stats
    assert one_stats["base"]["base_weights_digest"] != two_stats["base"]["base_weights_digest"]
    one, two = one.result, two.result
    assert one.events == two.events  # the same requests and slate sizes
    for arm in one.overall:
        assert one.overall[arm]["exposures"] == two.overall[arm]["exposures"], arm
        a, b = one.overall[arm]["interactions_per_exposure"], two.overall[arm]["interactions_per_exposure"]
        assert abs(a - b) <= 0.10 * a, (arm, a, b)


@pytest.mark.heavy  # keeps CI under 30 minutes; in CI: shards in process (tests/serving/test_shards.py) and as Serve
# deployments behind HTTP (tests/serving/test_http_serve.py)
def test_arms_in_two_shards_on_two_nodes_equal_one_shard_in_process(cluster, scenario, local, tmp_path):
    """serve.arm_replicas=2: every arm served by two Serve replicas owning disjoint users, shard 0 of every arm on
    one node and shard 1 on the other (serve.shard_resources), gives the in-process one-shard run's metrics exactly
    (serving.shards)."""
    sharded = scenario.model_copy(update={"serve": ServeConfig(arm_replicas=2, shard_resources=[{"arms_a": 1},
                                                                                              {"arms_b": 1}])})
    out, stats, _, _ = _ray_run(sharded, str(tmp_path / "sharded"))
    nodes = {arm: s["shard_nodes"] for arm, s in stats.items()}
    assert all(len(set(shard_nodes)) == 2 for shard_nodes in nodes.values()), nodes  # each arm on both nodes
    assert len({shard_nodes[0] for shard_nodes in nodes.values()}) == 1  # placed as serve.shard_resources says
    assert all(len(set(s["shard_digests"])) == 1 for s in stats.values())  # the shards serve the same weights
    assert out.result.overall == local.result.overall, f"recoveries in place: {stats['base']['recoveries']}"
    for arm, daily in local.result.daily.items():
        assert out.result.daily[arm].equals(daily), arm
