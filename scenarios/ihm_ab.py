"""ihm_ab: the Item History Model as arms of the A/B platform, with the paper's two ablations (section 4 and 5.2).

Run: ``simulate --scenario ihm_ab --scale tiny`` (a few minutes on 2 cores), ``--scale small`` or the
default scale. Four co-diverted arms, a quarter of the creators and users each: ``base`` (control, the
user-side stack); ``ihm``: base plus the IHM channel, cold items' IHM embeddings in an HNSW index queried
with the user's SASRec vector, re-inferred on every like/comment and every 50 impressions, rate-limited to
one inference per item per 5 simulated minutes, written to a KV store and the index in place; weights
trained on the arm's own positives during its first 2 days, then frozen (inductive serving);
``ihm_daily``: the same without real-time serving (every cold item re-inferred once a day);
``ihm_static``: no inductive structure (e_i = E_S of the item's features, trained so). Expect ihm >=
ihm_daily >= ihm_static on cold-item interactions and ExpoReach; the ATS latency per day is logged
under each IHM arm (``ihm.ats_p50_min``, ``ihm.ats_p95_min``; run-level ``overall.ihm.run.ats_p50_min``):
minutes for ``ihm`` (the paper reports 15 minutes end to end), about half a day for ``ihm_daily``.
"""

from simulator.core.config import ArmSpec, IHMArmSpec, Scenario, SyntheticConfig
from scenarios.coldstart_ab import SCALES  # the same tiny / small sizes

SCENARIO = Scenario(
    name="ihm_ab",
    description="Base (control) vs IHM with real-time serving, with daily batch inference, and E_S only.",
    arms=[
        ArmSpec(name="base", kind="base", share=0.25),
        ArmSpec(name="ihm", kind="ihm", share=0.25, ihm=IHMArmSpec()),
        ArmSpec(name="ihm_daily", kind="ihm", share=0.25, ihm=IHMArmSpec(realtime=False)),
        ArmSpec(name="ihm_static", kind="ihm", share=0.25, ihm=IHMArmSpec(static_only=True)),
    ],
    control="base",
    days=14,
    ticks_per_day=4,
    synthetic=SyntheticConfig(),
    scales=SCALES,
)
