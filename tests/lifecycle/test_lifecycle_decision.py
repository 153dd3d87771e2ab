"""Monotonic progress: every (current, observed) pair, and properties over any sequence of observations."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from processor.lifecycle import Decision, Outcome, State, Step, decide
from processor.lifecycle import decision as progress
from processor.lifecycle.machine import ChartError, Lifecycle, SandboxModel, transitions

S = State
_ABBREV = {
    "U": S.UNCLAIMED,
    "C": S.CLAIMED,
    "PO": S.PENDING_ONBOARDING,
    "PI": S.PENDING_INSTALL,
    "I": S.INSTALLED,
    "L": S.LIVE,
    "E": S.EXPIRED,
}
# current observed -> states entered (shortest path: claimed goes straight to pending_install unless
# pending_onboarding itself is observed). "-" is no current state: a sandbox never seen before.
_ADVANCE_TABLE = """
- U   U
- C   U C
- PO  U C PO
- PI  U C PI
- I   U C PI I
- L   U C PI I L
- E   U E
U C   C
U PO  C PO
U PI  C PI
U I   C PI I
U L   C PI I L
U E   E
C PO  PO
C PI  PI
C I   PI I
C L   PI I L
PO PI PI
PO I  PI I
PO L  PI I L
PI I  I
PI L  I L
I L   L
"""
_ANOMALIES = {(current, S.EXPIRED) for current in (S.CLAIMED, S.PENDING_ONBOARDING, S.PENDING_INSTALL)} | {
    (S.INSTALLED, S.EXPIRED),
    (S.LIVE, S.EXPIRED),
    *(
        (S.EXPIRED, later)
        for later in (S.CLAIMED, S.PENDING_ONBOARDING, S.PENDING_INSTALL, S.INSTALLED, S.LIVE)
    ),
}


def _advance_table() -> dict[tuple[State | None, State], list[State]]:
    table: dict[tuple[State | None, State], list[State]] = {}
    for line in _ADVANCE_TABLE.strip().splitlines():
        current, observed, *path = line.split()
        table[None if current == "-" else _ABBREV[current], _ABBREV[observed]] = [_ABBREV[s] for s in path]
    return table


ADVANCES = _advance_table()
ALL_PAIRS = [(current, observed) for current in (None, *State) for observed in State]


@pytest.mark.parametrize(("current", "observed"), ALL_PAIRS)
def test_every_pair_has_its_decision(current: State | None, observed: State) -> None:
    """Each (current, observed) pair advances along the expected path, is an anomaly, or is stale."""
    decision = decide(current, observed)
    if (current, observed) in ADVANCES:
        path = ADVANCES[current, observed]
        assert decision.outcome is Outcome.ADVANCE
        assert [step.to_state for step in decision.steps] == path
        assert [step.from_state for step in decision.steps] == [current, *path[:-1]]
        # only the last step was reported by Stripe; the ones before it are inferred
        assert [step.observed for step in decision.steps] == [False] * (len(path) - 1) + [True]
        assert decision.final_state is observed
    elif (current, observed) in _ANOMALIES:
        assert decision.outcome is Outcome.ANOMALY and decision.anomaly
        assert decision.steps == () and decision.reason == f"{observed} cannot follow {current}"
    else:
        assert decision.outcome is Outcome.STALE and decision.stale
        assert decision.steps == () and decision.final_state is None


def test_duplicate_observation_is_stale() -> None:
    """Observing the current state again is a no-op duplicate."""
    assert decide(S.INSTALLED, S.INSTALLED) == Decision(Outcome.STALE, reason="already installed")


def test_late_onboarding_after_install_is_stale_not_anomalous() -> None:
    """pending_onboarding reported after the shortest path skipped it is behind, hence stale."""
    decision = decide(S.PENDING_INSTALL, S.PENDING_ONBOARDING)
    assert decision.stale and decision.reason == "pending_onboarding is behind pending_install"


# --- properties ---------------------------------------------------------------------------------------
#: the complete paths a sandbox can take through the lifecycle
TRUE_PATHS = [
    [S.UNCLAIMED, S.EXPIRED],
    [S.UNCLAIMED, S.CLAIMED, S.PENDING_ONBOARDING, S.PENDING_INSTALL, S.INSTALLED, S.LIVE],
    [S.UNCLAIMED, S.CLAIMED, S.PENDING_INSTALL, S.INSTALLED, S.LIVE],
]


def _run(observations: list[State]) -> tuple[State | None, list[Step], list[Decision]]:
    """Apply the observations one by one, as the consumer does; returns final state, steps, decisions."""
    current: State | None = None
    steps: list[Step] = []
    decisions: list[Decision] = []
    for observed in observations:
        decision = decide(current, observed)
        decisions.append(decision)
        steps.extend(decision.steps)
        if decision.final_state is not None:
            current = decision.final_state
    return current, steps, decisions


def _assert_one_gap_free_path(steps: list[Step]) -> None:
    assert steps[0] == Step(None, S.UNCLAIMED, observed=steps[0].observed)
    for before, after in itertools.pairwise(steps):
        assert after.from_state is before.to_state  # no gap
        assert (after.from_state, after.to_state) in transitions()  # only allowed moves: never backwards
    entered = [step.to_state for step in steps]
    assert len(entered) == len(set(entered))  # each state entered once: transition ids are unique


def _is_at_or_after(state: State, other: State) -> bool:
    """Whether `state` is `other` or comes after it on some path of the lifecycle."""
    return any(
        other in path and state in path and path.index(state) >= path.index(other) for path in TRUE_PATHS
    )


@given(st.lists(st.sampled_from(list(State)), min_size=1, max_size=12))
def test_any_observations_give_one_monotonic_path_to_the_furthest(observations: list[State]) -> None:
    """For any sequence, state only moves forward along the chart, and ends at the furthest accepted state."""
    final, steps, decisions = _run(observations)
    _assert_one_gap_free_path(steps)
    assert final is not None and final in observations
    for observed, decision in zip(observations, decisions, strict=True):
        if decision.outcome is Outcome.ADVANCE:
            assert decision.steps[-1] == Step(decision.steps[-1].from_state, observed, observed=True)
            assert not any(step.observed for step in decision.steps[:-1])
        if decision.outcome is not Outcome.ANOMALY:
            assert _is_at_or_after(final, observed)  # nothing accepted lies beyond the final state
    # the statechart itself accepts the published path
    model = SandboxModel()
    lifecycle = Lifecycle(model)
    for step in steps[1:]:
        lifecycle.advance(step.to_state)
    assert model.state is final


@given(
    path=st.sampled_from(TRUE_PATHS),
    data=st.data(),
)
def test_real_histories_delivered_late_twice_or_out_of_order(path: list[State], data: st.DataObject) -> None:
    """Deliveries of a real history, reordered, duplicated or lost, end in its last state with no anomaly."""
    reached = data.draw(st.integers(min_value=1, max_value=len(path)), label="states reached")
    history = path[:reached]
    # any subset of the history (duplicates allowed), always including the latest state, in any order
    extra = data.draw(st.lists(st.sampled_from(history), max_size=10), label="other deliveries")
    observations = data.draw(st.permutations([*extra, history[-1]]), label="delivery order")
    final, steps, decisions = _run(observations)
    assert not any(decision.anomaly for decision in decisions)
    assert final is history[-1]
    _assert_one_gap_free_path(steps)
    # walked states are ones the sandbox really went through (a skipped optional state is never invented)
    assert {step.to_state for step in steps} <= set(history)


def test_chart_with_a_cycle_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """A chart in which a state can be entered twice is refused: "behind" and "monotonic" need a DAG."""
    cyclic = {**transitions(), (S.LIVE, S.CLAIMED): "reclaim"}
    monkeypatch.setattr(progress, "transitions", lambda: cyclic)
    progress._graph.cache_clear()
    try:
        with pytest.raises(ChartError, match="cycle"):
            decide(S.CLAIMED, S.LIVE)
    finally:
        monkeypatch.undo()
        progress._graph.cache_clear()
    assert decide(S.CLAIMED, S.LIVE).final_state is S.LIVE
