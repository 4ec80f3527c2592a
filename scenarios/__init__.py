"""The scenario registry: the only place that maps scenario names to their frozen configs."""

from __future__ import annotations

from simulator.core.config import Scenario
from scenarios.aa import SCENARIO as AA
from scenarios.boost_ab import SCENARIO as BOOST_AB
from scenarios.coldstart_ab import SCENARIO as COLDSTART_AB
from scenarios.ihm_ab import SCENARIO as IHM_AB
from scenarios.ihm_decay import SCENARIO as IHM_DECAY
from scenarios.dualrec_ladder import SCENARIO as DUALREC_LADDER
from scenarios.next_user_ablation import SCENARIO as NEXT_USER_ABLATION
from scenarios.oracle_ab import SCENARIO as ORACLE_AB

SCENARIOS: dict[str, Scenario] = {s.name: s for s in (COLDSTART_AB, DUALREC_LADDER, NEXT_USER_ABLATION, BOOST_AB, IHM_DECAY,
                                                  IHM_AB, AA, ORACLE_AB)}


def get_scenario(name: str) -> Scenario:
    try:
        return SCENARIOS[name]
    except KeyError:
        raise ValueError(f"unknown scenario '{name}'; known: {sorted(SCENARIOS)}") from None
