"""aa: three identical base arms, co-diverted: the A/A calibration of every lift and confidence interval.

Run: ``simulate --scenario aa --replicates 5 --scale small`` (or ``--scale tiny``). The arms differ in
nothing but the creators and users the salted hash gives them, so every lift is noise: a calibrated
read-out flags about 5% of its (arm, metric) cells at the 95% level, pooled over seeds; with
``--replicates`` each seed is also a new randomisation of the buckets. tests/simulator/test_aa.py
checks it at tiny scale; docs/metrics.md ("A/A calibration") has the measured rates with shared and
per-arm base models. Run this after any change to the world, the models, training or the metrics.
"""

from simulator.core.config import TINY_UPLOADS, ArmSpec, ScaleConfig, Scenario, SyntheticConfig

SCALES = {
    "tiny": ScaleConfig(synthetic=SyntheticConfig(n_users=1_500, n_creators=150, days=3,
                                                  uploads_per_creator_day=TINY_UPLOADS), ticks_per_day=2,
                        expo_window_days=1.0, train_batch_size=512),
    "small": ScaleConfig(synthetic=SyntheticConfig(n_users=5_000, n_creators=500, days=7)),
}

SCENARIO = Scenario(
    name="aa",
    description="A/A: three identical base arms (control a1), co-diverted; every lift is noise.",
    arms=[ArmSpec(name=f"a{i}", kind="base", share=1 / 3) for i in (1, 2, 3)],
    control="a1",
    days=14,
    ticks_per_day=4,
    synthetic=SyntheticConfig(),
    scales=SCALES,
)
