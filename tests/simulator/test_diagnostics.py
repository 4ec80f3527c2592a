"""Strategy diagnostics: pooling rules and the Table 2 / Table 4 / Fig. 9 layouts, on hand-made rows."""

import numpy as np
import polars as pl
import pytest

from simulator.core.config import ArmSpec, DualRecSpec, Scenario
from simulator.diagnostics import auc_table, msize_table, summarise
from simulator.run.report import format_ladder_markdown


def test_summary_pools_hit_rates_by_pairs_sums_bins_and_averages_the_rest():
    diag = pl.DataFrame({
        "day": [0.0, 1.0, 2.0],
        "dualrec.hit_rate.actual": [None, 0.5, 0.8], "dualrec.hit_pairs.actual": [None, 10.0, 30.0],
        "dualrec.msize.actual.bin0": [5.0, 3.0, 2.0], "dualrec.msize.actual.bin1": [0.0, 2.0, 3.0],
        "dualrec.expo_share": [0.01, 0.02, float("nan")],
        "train.dualrec.auc.sa0_ef0.like": [0.6, 0.7, 0.8], "train.dualrec.auc.sa1_ef1.like": [0.7, 0.8, 0.9],
    })
    s = summarise(diag)
    assert s["dualrec.hit_rate.actual"] == pytest.approx((0.5 * 10 + 0.8 * 30) / 40)  # 0.725, not the mean 0.65
    assert s["dualrec.hit_pairs.actual"] == 40
    assert s["dualrec.msize.actual.bin0"] == 10 and s["dualrec.msize.actual.bin1"] == 5
    assert s["dualrec.expo_share"] == pytest.approx(0.015)  # NaN days skipped
    t = auc_table(s)
    assert t["model"].to_list() == ["w/o SA, w/o EF", "with SA, with EF"]
    assert t["like"].to_list() == pytest.approx([0.7, 0.8])
    m = msize_table(s)
    assert m["|M_u|"].to_list() == ["0", "1+"] and m["actual"].to_list() == [10.0, 5.0]


def test_cumulative_run_values_are_taken_from_the_last_day_that_reported_them():
    diag = pl.DataFrame({"day": [0.0, 1.0, 2.0], "ihm.ats_p95_min": [1.0, 3.0, None],
                         "ihm.run.ats_p95_min": [1.0, 2.5, None], "ihm.run.ats_samples": [10.0, 30.0, 30.0]})
    s = summarise(diag)
    assert s["ihm.ats_p95_min"] == 2.0  # daily values: the mean over the days
    assert s["ihm.run.ats_p95_min"] == 2.5 and s["ihm.run.ats_samples"] == 30.0  # pooled so far: the last value


def test_ladder_markdown_marks_significant_steps():
    lad = pl.DataFrame({"metric": ["dac", "dac"], "arm": ["v1", "v2"], "baseline": ["base", "v1"],
                        "control_value": [1.0, 1.1], "arm_value": [1.1, 1.1], "lift": [0.1, 0.0],
                        "ci_low": [0.02, -0.05], "ci_high": [0.2, 0.05]})
    md = format_ladder_markdown(lad, ["dac"])
    assert "| v1 | base | +10.0%* [+2.0%, +20.0%] |" in md
    assert "| v2 | v1 | +0.0% [-5.0%, +5.0%] |" in md


def test_dualrec_versions_and_ladder_validation():
    v = [DualRecSpec.for_version(k) for k in range(1, 6)]
    assert [x.ranker_sa_ef for x in v] == [False, True, True, True, True]
    assert [x.item_sim for x in v] == [False, False, True, True, True]
    assert [x.user_sim for x in v] == [False, False, False, True, True]
    assert [x.user_bias for x in v] == [False, False, False, False, True]
    assert DualRecSpec.for_version(2, cap=3).cap == 3
    with pytest.raises(ValueError, match="1..5"):
        DualRecSpec.for_version(6)
    with pytest.raises(ValueError, match="unknown ranking tasks"):
        DualRecSpec(rank_weights={"profile_visit": 1.0})
    arms = [ArmSpec(name="base", share=0.5), ArmSpec(name="v1", kind="dualrec", share=0.5)]
    with pytest.raises(ValueError, match="ladder arms"):
        Scenario(name="x", description="x", arms=arms, control="base", ladder=["base", "v9"])
