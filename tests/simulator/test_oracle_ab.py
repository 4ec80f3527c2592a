"""The positive control through the driver: the truth's candidates reach the oracle arm, which matches new items."""

import numpy as np

from scenarios import get_scenario
from simulator.run.loop import Simulation
from simulator.run.runtime import LocalRuntime
from simulator.sources.synthetic import generate_synthetic


def test_oracle_match_arm_matches_new_items_to_its_own_users(tmp_path):
    sc = get_scenario("oracle_ab").at_scale("tiny")
    log = generate_synthetic(sc.synthetic, sc.seed)
    sim = Simulation(sc, log, LocalRuntime, tmp_path, progress=False, checkpoints=False)
    res = sim.run()
    diag = res.diagnostics["oracle_match"]
    assert diag["dualrec.coverage.creator_side.actual"].drop_nulls().max() > 0.3  # items got matched from day 1
    ch = sim.runtime.policies["oracle_match"].channels[0]
    matches = ch.diagnostics.matches["actual"]
    matched = np.concatenate([m[0] for m in matches]) if matches else np.zeros(0, int)
    store = sim.runtime.policies["oracle_match"].store
    arm_users = sim.arms[sim.arm_names.index("oracle_match")].users
    assert np.isin(store.users.ids[matched], arm_users).all()  # never a user of another arm
    served = res.comparison.filter(res.comparison["arm"] == "oracle_match")
    assert served.height > 0
