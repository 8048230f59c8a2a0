"""The suite's time budget: `make test` <= 25 minutes on a slow machine of this kind, so no
test may take more than conftest.SHARE of the suite unless marked `slow(reason=...)`.
Checked when the whole suite ran (`make test`, CI); a selection (-k, -m, a file) skips it."""

from __future__ import annotations

import pytest

from conftest import DURATIONS, FAILED, SHARE


def over_share(durations: dict[str, float], slow: set[str], share: float) -> list[str]:
    """Tests over `share` of the total that are not marked slow, largest first."""
    total = sum(durations.values())
    return [f"{nodeid}: {seconds:.0f} s = {seconds / total:.1%} of {total:.0f} s"
            for nodeid, seconds in sorted(durations.items(), key=lambda kv: -kv[1])
            if seconds > share * total and nodeid not in slow]


def test_over_share_names_only_unmarked_tests_over_it():
    durations = {"a": 50.0, "b": 30.0, "c": 20.0}
    assert over_share(durations, set(), 0.25) == ["a: 50 s = 50.0% of 100 s",
                                                  "b: 30 s = 30.0% of 100 s"]
    assert over_share(durations, {"a"}, 0.25) == ["b: 30 s = 30.0% of 100 s"]
    assert over_share(durations, set(), 0.5) == []


@pytest.mark.budget_check
def test_no_test_takes_more_than_its_share_unless_marked_slow(request):
    config, session = request.config, request.session
    if config.args_source != pytest.Config.ArgsSource.TESTPATHS or config.option.keyword \
            or config.option.markexpr:
        pytest.skip("a selection ran, not the whole suite")
    if FAILED:
        pytest.skip("tests failed; their times say nothing about the budget")
    slow = {item.nodeid for item in session.items if item.get_closest_marker("slow")}
    over = over_share({k: v for k, v in DURATIONS.items() if k != request.node.nodeid}, slow,
                      SHARE)
    assert not over, ("over their share of the suite's time, not marked slow(reason=...):\n"
                      + "\n".join(over))
