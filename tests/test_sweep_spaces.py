"""A sweep's parameter space and the searches that draw trials from it (runner.sweeps.space,
runner.sweeps.search), and the search seam's registry. Unit tier: no mlflow, nothing run."""
from __future__ import annotations

import pytest

from runner import seams
from runner.errors import UsageError
from runner.sweeps.search import GridSearch, SearchSettings, make_search
from runner.sweeps.space import parse_space

pytestmark = pytest.mark.unit


def _settings(assignments: dict[str, str], max_runs: int | None = None, seed: int | None = None) -> SearchSettings:
    return SearchSettings(parse_space(assignments), max_runs, seed, None, "minimize")


def test_every_spec_form_parses_to_its_dimension():
    space = parse_space({"a": "0.1,0.5", "b": "range(0,1,0.25)", "c": "choice(x,y)", "d": "uniform(0,1)",
                         "e": "loguniform(1e-4,1)", "f": "int(uniform(10,200))", "g": "3", "h": "x\\,y"})
    by_name = {d.name: d for d in space.dimensions}
    assert by_name["a"].values == ("0.1", "0.5") and by_name["c"].values == ("x", "y")
    assert by_name["b"].values == ("0.0", "0.25", "0.5", "0.75")
    assert (by_name["d"].low, by_name["d"].high, by_name["d"].log) == (0, 1, False)
    assert by_name["e"].log and by_name["f"].integer and not by_name["f"].finite
    assert dict(space.fixed) == {"g": "3", "h": "x,y"}  # `\,` is a literal comma


def test_grid_is_every_combination_first_dimension_slowest():
    search = make_search("grid", _settings({"a": "1,2", "b": "x,y,z", "k": "7"}))
    assert not search.ADAPTIVE and search.budget() == 6
    assert [(p["a"], p["b"], p["k"]) for p in search.planned()] == [
        ("1", "x", "7"), ("1", "y", "7"), ("1", "z", "7"), ("2", "x", "7"), ("2", "y", "7"), ("2", "z", "7")]
    assert len(make_search("grid", _settings({"a": "1,2", "b": "x,y,z"}, max_runs=4)).planned()) == 4


def test_a_grid_over_a_continuous_range_is_refused_with_the_way_out():
    with pytest.raises(UsageError, match="a grid needs finite values, and d is a continuous range") as info:
        make_search("grid", _settings({"d": "uniform(0,1)"}))
    assert "--method random" in info.value.hint


def test_random_draws_are_the_seeds_and_stay_in_their_ranges():
    def drawn(seed: int) -> list[dict[str, str]]:
        return make_search("random", _settings({"x": "loguniform(1e-3,1)", "n": "int(uniform(0,5))"}, 20, seed)).planned()

    assert drawn(7) == drawn(7) and drawn(7) != drawn(8) and len(drawn(7)) == 20
    assert all(1e-3 <= float(p["x"]) <= 1 and p["n"] in {"0", "1", "2", "3", "4", "5"} for p in drawn(7))
    assert len(make_search("random", _settings({"x": "uniform(0,1)"})).planned()) == 10  # the default budget


def test_corners_give_every_listed_value_and_both_ends_of_each_range():
    corners = parse_space({"a": "p,q,r", "x": "uniform(0,2)", "n": "int(uniform(1,9))", "k": "1"}).corners()
    assert {c["a"] for c in corners} == {"p", "q", "r"}
    assert {c["x"] for c in corners} == {"0.0", "2.0"} and {c["n"] for c in corners} == {"1", "9"}
    assert all(c["k"] == "1" for c in corners)


def test_an_unknown_method_names_the_registered_ones():
    with pytest.raises(UsageError, match="unknown sweep method 'bayes'") as info:
        make_search("bayes", _settings({"a": "1"}))
    assert info.value.hint == f"choose one of: {', '.join(seams.SEARCHES)}"


class EveryOther(GridSearch):
    """A toy search added as the README shows: the grid's points, every other one."""

    def _draw(self, settings):
        return super()._draw(settings)[::2]


def test_a_search_registered_once_is_a_method():
    seams.register_search("every-other", lambda: EveryOther)
    try:
        search = make_search("every-other", _settings({"a": "1,2,3,4"}))
        assert [p["a"] for p in search.planned()] == ["1", "3"]
        from runner.sweeps.driver import SweepRequest

        SweepRequest(uri=".", parameters={"a": "1,2"}, method="every-other").check()  # the driver takes it
    finally:
        seams.unregister("every-other")
    with pytest.raises(UsageError):
        SweepRequest(uri=".", parameters={"a": "1,2"}, method="every-other").check()
