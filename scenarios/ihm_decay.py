"""ihm_decay: the Item History Model's offline decay protocol (IHM paper section 5.1, Table 1 and Fig. 3).

Run: ``simulate --scenario ihm_decay --log movielens:../shared/data/ml-100k`` (the reference real
log) or ``simulate --scenario ihm_decay --scale tiny`` (the synthetic platform). Positives before
the median timestamp train each model once; the later half is cut into 5 equal time windows and
scored with no retraining: HitRate@10 and NDCG@10 of the liked item among all items, overall, on
tail items (< 5 training positives) and head items. Expected from the paper: IHM beats the
transductive baselines on tail items in window 1 without losing on head items (H1), and its
HitRate does not decay across windows while the baselines' does (H2); the frozen-history and
static-embedding ablations lose part of the gain (SPEC section 4).
"""

from simulator.core.config import TINY_UPLOADS, ArmSpec, IHMOfflineConfig, ScaleConfig, Scenario, SyntheticConfig

VARIANTS = ("ihm", "ihm_frozen", "ihm_static", "transductive", "sasrec")

SCENARIO = Scenario(
    name="ihm_decay",
    description="IHM vs transductive two-tower and SASRec: HitRate/NDCG@10 on tail/head items over 5 windows, no retraining.",
    protocol="ihm_offline",
    arms=[ArmSpec(name=v, kind=v, share=1.0 / len(VARIANTS)) for v in VARIANTS],
    control="transductive",
    days=14,
    synthetic=SyntheticConfig(n_users=5_000, n_creators=500),
    ihm_offline=IHMOfflineConfig(),
    scales={
        "tiny": ScaleConfig(synthetic=SyntheticConfig(n_users=400, n_creators=40, days=4,
                                                      uploads_per_creator_day=TINY_UPLOADS)),
        "small": ScaleConfig(synthetic=SyntheticConfig(n_users=2_000, n_creators=200, days=7)),
    },
)
