"""dualrec_ladder: DualRec's version ladder (papers/dualrec_creator_side.txt, Table 2) as one co-diverted run.

Run: ``simulate --scenario dualrec_ladder`` (default scale) or ``simulate --scenario dualrec_ladder --scale tiny``.
Arms: the base user-side stack and DualRec v1..v5, each with its own creators and users (co-diverted):
v1 two-tower + ranking without SA/EF + UAC + combined ranking; v2 + SA/EF; v3 + item-similarity
retrieval; v4 + user-similarity retrieval; v5 + user-bias score integration. Besides the comparison
with base, every version is compared with the previous one (ExpoReach-K lifts with CIs, the paper's
Table 2 layout), DAC over days is plotted, and v5 also trains the three other SA/EF ranker variants to
give the AUC table (Table 4). The UAC diagnostics (hit rate with and without activity prediction,
|M_u| with and without the store, creator- vs user-side coverage) are logged per day for each version.
The paper reports every step positive at 95% confidence on ExpoReach-1K/5K/10K (7-day experiments).
"""

from simulator.core.config import TINY_UPLOADS, ArmSpec, DualRecSpec, ScaleConfig, Scenario, SyntheticConfig

SCALES = {
    "tiny": ScaleConfig(
        synthetic=SyntheticConfig(n_users=1_800, n_creators=180, days=3,
                                  uploads_per_creator_day=TINY_UPLOADS, mean_daily_visit_prob=0.3),
        ticks_per_day=2, expo_k=[5, 20, 50], expo_window_days=1.0, train_batch_size=512,
    ),
    "small": ScaleConfig(
        synthetic=SyntheticConfig(n_users=6_000, n_creators=600, days=7),
        expo_k=[10, 30, 100],
    ),
}

ARMS = [ArmSpec(name="base", kind="base", share=1 / 6)] + [
    ArmSpec(name=f"dualrec_v{v}", kind="dualrec", share=1 / 6, dualrec=DualRecSpec.for_version(v, auc_table=v == 5))
    for v in range(1, 6)
]

SCENARIO = Scenario(
    name="dualrec_ladder",
    description="DualRec v1..v5 and the base stack, co-diverted; each version's ExpoReach lift over the previous one.",
    arms=ARMS,
    control="base",
    ladder=[a.name for a in ARMS],
    days=14,
    ticks_per_day=4,
    synthetic=SyntheticConfig(),
    scales=SCALES,
)
