"""boost_ab: the base recommender vs the same with a three times stronger, longer-lasting new-item boost.

Run: ``simulate --scenario boost_ab [--scale tiny]``. The reference point for any cold-start strategy:
how much ExpoReach and new-item coverage does plain score boosting buy, and what does it cost in
interactions per exposure? Expect base_boost to raise ExpoReach at small K and coverage, and to
lower interactions per exposure.
"""

from simulator.core.config import ArmSpec, Scenario, StackConfig
from scenarios.coldstart_ab import SCALES

SCENARIO = Scenario(
    name="boost_ab",
    description="Base recommender (control) vs a stronger FairRec-like new-item boost.",
    arms=[
        ArmSpec(name="base", kind="base", share=0.5),
        ArmSpec(name="base_boost", kind="base", share=0.5, stack=StackConfig(new_item_boost=0.15, boost_max_exposures=150)),
    ],
    control="base",
    days=14,
    ticks_per_day=4,
    scales=SCALES,
)
