"""A/A calibration: three identical base arms over ten seeds flag about the nominal share of cells.

The ``aa`` scenario at tiny scale, in-process (about 2 s a seed). With shared base models and the
two-way bootstrap the share of defined (arm, metric, seed) cells whose 95% CI excludes 0 must stay at
or below 10%; the same check on a read-out that ignores the creators' side of user metrics
(``bootstrap_two_way=False``) fails, which is what this test is there to catch. Measured rates at
small and default scale: docs/metrics.md, "A/A calibration" (benchmarks/bench_aa.py).
"""

import pytest

from scenarios import get_scenario
from simulator.run.calibration import aa_comparisons, false_positive_rate

SEEDS = list(range(10))
NOMINAL_BOUND = 0.10


@pytest.fixture(scope="module")
def aa():
    return get_scenario("aa").at_scale("tiny")


@pytest.fixture(scope="module")
def shared(aa):
    return aa_comparisons(aa, SEEDS, base_models="shared")


def test_aa_false_positive_rate_is_nominal_with_shared_base_models(shared):
    fp = false_positive_rate(shared)
    assert fp.defined >= 0.8 * shared.height, f"too many undefined cells to read: {fp.undefined} of {shared.height}"
    assert fp.rate <= NOMINAL_BOUND, f"A/A flags {fp.rate:.1%} of {fp.defined} cells:\n{fp.per_metric}"
    # every metric is read: ExpoReach at each derived K included
    assert set(fp.per_metric["metric"]) >= {"expo_reach_q50", "dac", "publications", "cold_interactions",
                                            "interactions_per_exposure", "engaged_users"}


def test_aa_cuped_lifts_are_calibrated_too(shared):
    fp = false_positive_rate(shared, cuped=True)
    assert fp.defined >= 40
    assert fp.rate <= NOMINAL_BOUND, f"CUPED A/A flags {fp.rate:.1%} of {fp.defined} cells:\n{fp.per_metric}"


def test_the_check_fails_on_a_read_out_that_ignores_creators_in_user_metrics(aa):
    one_way = aa._revalidated({"metrics": aa.metrics.model_copy(update={"bootstrap_two_way": False})})
    fp = false_positive_rate(aa_comparisons(one_way, SEEDS, base_models="shared"))
    assert fp.rate > NOMINAL_BOUND, f"one-way bootstrap flags only {fp.rate:.1%}: the A/A check could not fail"


def test_an_aa_scenario_must_have_identical_arms():
    with pytest.raises(ValueError, match="not an A/A scenario"):
        aa_comparisons(get_scenario("coldstart_ab").at_scale("tiny"), [0])


def test_an_injected_effect_is_detected(aa):
    """a3's creators upload 1.5 times as often (a world-side effect of known size): the read-out must see it."""
    arms = [a.model_copy(update={"injected_upload_factor": 1.5}) if a.name == "a3" else a for a in aa.arms]
    injected = aa._revalidated({"arms": arms})
    comp = aa_comparisons(injected, SEEDS[:5], base_models="shared", allow_injected=True)
    pubs = comp.filter((comp["metric"] == "publications") & (comp["arm"] == "a3"))
    assert pubs["significant_cuped"].sum() >= 4, pubs
    assert 0.3 < pubs["lift_cuped"].mean() < 0.7, pubs  # +50% injected
    null = comp.filter((comp["metric"] == "publications") & (comp["arm"] == "a2"))
    assert null["significant_cuped"].sum() <= 1, null
