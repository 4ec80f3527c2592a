"""oracle_ab: the positive control. Base vs creator-side matching that knows the truth, under DualRec's budget and cap.

Run: ``simulate --scenario oracle_ab`` (or ``--scale tiny``/``small``). ``oracle_match`` is DualRec v5's
UAC (activity model, available-user store with cap N = 10, result cache with a one-day expiry), eq. 14
boost and 2% exposure budget, with each new item's T = 200 target users picked by the world's true
score instead of the learned retrievals and ranker. It is the best any creator-side strategy can do
under the same constraints: if it cannot raise ExpoReach (at the derived K) and cold-item interactions
with CIs that exclude 0 at default scale, the world gives creator-side matching no room
(docs/world.md, "Positive control").
"""

from simulator.core.config import ArmSpec, DualRecSpec, Scenario, SyntheticConfig
from scenarios.coldstart_ab import SCALES

SCENARIO = Scenario(
    name="oracle_ab",
    description="Positive control: base vs oracle creator-side matching (true affinity) under DualRec's budget and cap.",
    arms=[
        ArmSpec(name="base", kind="base", share=0.5),
        ArmSpec(name="oracle_match", kind="oracle_match", share=0.5, dualrec=DualRecSpec.for_version(5)),
    ],
    control="base",
    days=14,
    ticks_per_day=4,
    synthetic=SyntheticConfig(),
    scales=SCALES,
)
