"""coldstart_ab: which cold-start strategy gets new items to the right users, fast, without hurting users.

Run: ``simulate --scenario coldstart_ab`` (default scale: ~20k users, 2k creators, 14 days) or
``simulate --scenario coldstart_ab --scale tiny`` (about a minute). Control is the base arm; until
the seed arms (Next-User, DualRec, IHM) join, ``base_boost`` (base with a three times stronger,
longer-lasting new-item boost) makes the A/B real. Expect base_boost to raise ExpoReach at small K and
new-item coverage, and to cost a little interactions per exposure.
"""

from simulator.config import ArmSpec, Scenario, ScaleConfig, StackConfig, SyntheticConfig

SCENARIO = Scenario(
    name="coldstart_ab",
    description="Base user-side recommender (control) vs a stronger new-item boost, co-diverted by creator and user.",
    arms=[
        ArmSpec(name="base", kind="base", share=0.5),
        ArmSpec(name="base_boost", kind="base", share=0.5,
                stack=StackConfig(new_item_boost=0.45, boost_max_exposures=150)),
    ],
    control="base",
    days=14,
    ticks_per_day=4,
    synthetic=SyntheticConfig(),
    scales={
        "tiny": ScaleConfig(
            synthetic=SyntheticConfig(n_users=1_500, n_creators=150, days=3, mean_daily_visit_prob=0.3),
            ticks_per_day=2, expo_k=[5, 20, 50], train_batch_size=512,
        ),
        "small": ScaleConfig(
            synthetic=SyntheticConfig(n_users=5_000, n_creators=500, days=7),
            expo_k=[10, 30, 100],
        ),
    },
)
