"""coldstart_ab: which cold-start strategy gets new items to the right users, fast, without hurting users.

Run: ``simulate --scenario coldstart_ab`` (default scale: ~20k users, 2k creators, 14 days) or
``simulate --scenario coldstart_ab --scale tiny`` (about a minute). Control is the base arm (user-side
two-tower + fresh + popular channels, multi-task ranking, FairRec-like new-item boost); each
cold-start strategy is an arm of its own: ``next_user`` adds the Next-User Retrieval channel
(papers/next_user_retrieval.txt; the paper reports +7% cold-item interactions and +0.11%
publications); ``dualrec_v5`` is DualRec with UAC (papers/dualrec_creator_side.txt: every uploaded
item matched to 200 available users, boosted combined ranking under a 2% exposure budget; the paper
reports ExpoReach gains at every version and +2.9% DAC after 21 days; ``dualrec_ladder`` runs
its versions); ``ihm`` adds the Item History Model channel (papers/item_history_model_ihm.txt: cold
items' inductive embeddings re-inferred on every like under a 5-minute rate limit, weights frozen after
2 days; the paper reports gains on fresh and tail content and a 15-minute action-to-serving latency;
``ihm_ab`` runs its ablations). Each arm has a quarter of the creators and users. ``boost_ab``
compares base with a stronger new-item boost instead. The user-side base models (two-tower, ranker)
are shared: one learner on all arms' traffic serves every arm, so arms differ only by their strategy
(``train.base_models``, docs/metrics.md). Read effects over seeds too:
``simulate --scenario coldstart_ab --replicates 3``; ``simulate --scenario aa`` checks the read-out's calibration.
"""

from simulator.core.config import TINY_UPLOADS, ArmSpec, DualRecSpec, IHMArmSpec, NextUserSpec, ScaleConfig, Scenario, SyntheticConfig

SCALES = {
    "tiny": ScaleConfig(
        synthetic=SyntheticConfig(n_users=1_500, n_creators=150, days=3,
                                  uploads_per_creator_day=TINY_UPLOADS, mean_daily_visit_prob=0.3),
        ticks_per_day=2, expo_k=[5, 20, 50], expo_window_days=1.0, train_batch_size=512,
    ),
    "small": ScaleConfig(
        synthetic=SyntheticConfig(n_users=5_000, n_creators=500, days=7),
        expo_k=[10, 30, 100],
    ),
    # ten times the default platform: for a Ray cluster (docs/performance.md, "Scaling": its expected cost on one
    # machine comes from benchmarks/bench_scaling.py's cost model)
    "large": ScaleConfig(
        synthetic=SyntheticConfig(n_users=200_000, n_creators=20_000, days=14),
    ),
}

SCENARIO = Scenario(
    name="coldstart_ab",
    description="Base user-side recommender (control) vs the cold-start strategies, co-diverted by creator and user.",
    arms=[
        ArmSpec(name="base", kind="base", share=0.25),
        ArmSpec(name="next_user", kind="next_user", share=0.25, next_user=NextUserSpec()),
        ArmSpec(name="dualrec_v5", kind="dualrec", share=0.25, dualrec=DualRecSpec.for_version(5)),
        ArmSpec(name="ihm", kind="ihm", share=0.25, ihm=IHMArmSpec()),
    ],
    control="base",
    days=14,
    ticks_per_day=4,
    synthetic=SyntheticConfig(),
    scales=SCALES,
)
