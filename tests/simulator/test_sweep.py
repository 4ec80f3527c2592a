"""Parameter sweeps (simulator.run.sweep): parsing, the grid, validated overrides, the table."""

import polars as pl
import pytest
from pydantic import ValidationError

from scenarios import get_scenario
from simulator.run.session import RunOptions, resolve_scenario
from simulator.run.sweep import (SweepAxis, format_sweep_markdown, parse_sweep, point_label, sweep_points,
                                 sweep_table, with_field)


def test_parse_values_as_json_where_they_parse():
    axis = parse_sweep("world.creator_elasticity=0.2, 0.5,1")
    assert axis == SweepAxis("world.creator_elasticity", (0.2, 0.5, 1))
    assert parse_sweep("train.base_models=shared,per_arm").values == ("shared", "per_arm")
    assert parse_sweep("world.use_observed_outcomes=true,false").values == (True, False)


@pytest.mark.parametrize("spec, words", [("world.creator_elasticity", "PATH=V1"), ("=1,2", "PATH=V1"),
                                          ("a.b=", "PATH=V1"), ("a.b=1,,2", "empty value"), ("a.b=1,1", "twice")])
def test_bad_specs_name_the_problem(spec, words):
    with pytest.raises(ValueError, match=words):
        parse_sweep(spec)


def test_grid_is_every_combination_first_axis_slowest():
    points = sweep_points([SweepAxis("a", (1, 2)), SweepAxis("b", ("x", "y", "z"))])
    assert [point_label(p) for p in points] == ["a=1,b=x", "a=1,b=y", "a=1,b=z", "a=2,b=x", "a=2,b=y", "a=2,b=z"]
    with pytest.raises(ValueError, match="swept twice"):
        sweep_points([SweepAxis("a", (1,)), SweepAxis("a", (2,))])


def test_overrides_are_validated_and_name_the_path():
    scenario = get_scenario("coldstart_ab")
    assert with_field(scenario, "world.creator_elasticity", 0.2).world.creator_elasticity == 0.2
    assert scenario.world.creator_elasticity != 0.2  # the original is untouched
    with pytest.raises(ValueError, match="no field 'nope' in world"):
        with_field(scenario, "world.nope", 1)
    with pytest.raises(ValueError, match="no field 'wrld' in the scenario"):
        with_field(scenario, "wrld.creator_elasticity", 1)
    with pytest.raises(ValidationError, match="creator_elasticity"):
        with_field(scenario, "world.creator_elasticity", -1.0)
    with pytest.raises(ValueError, match="--replicates"):
        with_field(scenario, "seed", 3)
    with pytest.raises(ValueError, match="what the scenario compares"):
        with_field(scenario, "control", "ihm")


def test_a_point_is_applied_after_the_scale_and_the_seed():
    """A swept field of the synthetic platform survives the named scale's overrides (applied last)."""
    scenario = get_scenario("coldstart_ab")
    tiny = resolve_scenario(scenario, RunOptions(scenario=scenario.name, scale="tiny", seed=4))
    swept = resolve_scenario(scenario, RunOptions(scenario=scenario.name, scale="tiny", seed=4,
                                                  overrides={"synthetic.n_users": 999, "world.creator_elasticity": 0.1}))
    assert swept.synthetic.n_users == 999 and tiny.synthetic.n_users != 999
    assert swept.world.creator_elasticity == 0.1 and swept.seed == 4 and swept.days == tiny.days


def test_table_and_markdown_hold_every_point():
    comparison = pl.DataFrame({"metric": ["dac", "dac"], "arm": ["x", "y"], "lift": [0.1, -0.05],
                               "ci_low": [0.0, -0.1], "ci_high": [0.2, 0.0]})
    points = [{"world.creator_elasticity": 0.2}, {"world.creator_elasticity": 0.5}]
    table = sweep_table(points, [comparison, comparison.with_columns(pl.col("lift") * 2)])
    assert table.height == 4 and table.columns[:2] == ["point", "world.creator_elasticity"]
    assert table.filter(pl.col("point") == "world.creator_elasticity=0.5")["lift"].to_list() == [0.2, -0.1]
    markdown = format_sweep_markdown(table, "lift")
    assert "| world.creator_elasticity=0.5 | dac | x | +20.0% [+0.0%, +20.0%] |" in markdown
    assert markdown.count("\n") == 2 + 4


def test_arm_placement_is_validated_with_the_scenario():
    """serve.arm_resources (arms on chosen cluster nodes) names arms of the scenario and positive amounts; it can be
    set like any setting."""
    scenario = get_scenario("coldstart_ab")
    placed = with_field(scenario, "serve.arm_resources", {"ihm": {"arms_b": 1}})
    assert placed.serve.arm_resources == {"ihm": {"arms_b": 1.0}}
    with pytest.raises(ValidationError, match="not arms of the scenario"):
        with_field(scenario, "serve.arm_resources", {"nope": {"arms_b": 1}})
    with pytest.raises(ValidationError, match="amounts must be > 0"):
        with_field(scenario, "serve.arm_resources", {"ihm": {"arms_b": 0}})
