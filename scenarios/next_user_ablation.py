"""next_user_ablation: the Next-User Retrieval ablation ladder of the paper's Table 1, offline on one stream.

Run: ``simulate --scenario next_user_ablation`` (synthetic platform) or
``simulate --scenario next_user_ablation --log movielens:../shared/data/ml-100k`` (the reference
real log). Every variant is trained on the same time-ordered stream of the log's positive
interactions and exposures (days before 70% of the log), then scored by Recall@20/50 of the
next real interacting user on the later days: absolute for the full model, relative difference
for each ablation. Expected from the paper: every ablation is worse than the full model, the
traditional lookalike by far the most, then masked prefix prompts, then half the sequence.
"""

from simulator.core.config import TINY_UPLOADS, ArmSpec, NextUserSpec, OfflineConfig, ScaleConfig, Scenario, SyntheticConfig

VARIANTS = {
    "next_user": NextUserSpec(),
    "lookalike": NextUserSpec(mode="lookalike"),
    "mask_prefix": NextUserSpec(mask_prefix=True),
    "half_seq": NextUserSpec(seq_len=25),
    "no_cls": NextUserSpec(use_cls=False),
    "no_causal": NextUserSpec(causal=False),
}

SCENARIO = Scenario(
    name="next_user_ablation",
    description="Next-User Retrieval vs its ablations (Table 1): Recall@20/50 of the next interacting user, offline.",
    protocol="next_user_offline",
    arms=[ArmSpec(name=n, kind="next_user", share=1.0 / len(VARIANTS), next_user=v) for n, v in VARIANTS.items()],
    control="next_user",
    days=14,
    synthetic=SyntheticConfig(n_users=10_000, n_creators=1_000),
    offline=OfflineConfig(train_frac=0.7, epochs=2, samples_per_step=4096, max_eval=3000),
    scales={
        "tiny": ScaleConfig(synthetic=SyntheticConfig(n_users=800, n_creators=80, days=4,
                                                      uploads_per_creator_day=TINY_UPLOADS)),
        "small": ScaleConfig(synthetic=SyntheticConfig(n_users=3_000, n_creators=300, days=7)),
    },
)
