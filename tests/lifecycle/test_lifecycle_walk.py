"""The statechart executes every decided step and calls the handlers for each state entered."""

from __future__ import annotations

import pytest

from processor.lifecycle import State, Step, decide
from processor.lifecycle.machine import ChartError, TransitionForbidden
from processor.lifecycle.walk import walk


class Recorder:
    def __init__(self) -> None:
        self.seen: list[tuple[State | None, State, bool, int]] = []

    def entered(self, step: Step, sequence: int) -> None:
        self.seen.append((step.from_state, step.to_state, step.observed, sequence))


def test_a_new_sandbox_enters_the_initial_state_then_each_inferred_and_the_observed_state() -> None:
    """Every handler hears every state in order, the initial state first."""
    first, second = Recorder(), Recorder()
    steps = decide(None, State.PENDING_INSTALL).steps
    assert walk(None, steps, 0, [first, second]) == 3
    assert first.seen == second.seen == [
        (None, State.UNCLAIMED, False, 1),
        (State.UNCLAIMED, State.CLAIMED, False, 2),
        (State.CLAIMED, State.PENDING_INSTALL, True, 3),
    ]


def test_a_known_sandbox_continues_its_sequence() -> None:
    recorder = Recorder()
    assert walk(State.INSTALLED, decide(State.INSTALLED, State.LIVE).steps, 5, [recorder]) == 6
    assert recorder.seen == [(State.INSTALLED, State.LIVE, True, 6)]


def test_a_step_the_chart_forbids_raises_before_its_handlers_run() -> None:
    recorder = Recorder()
    with pytest.raises(TransitionForbidden):
        walk(State.CLAIMED, [Step(State.CLAIMED, State.EXPIRED, observed=True)], 3, [recorder])
    assert recorder.seen == []


def test_a_path_that_disagrees_with_the_current_state_is_refused() -> None:
    """A decision made for another state than the one the machine starts in cannot be walked."""
    with pytest.raises((ChartError, TransitionForbidden)):
        walk(State.CLAIMED, [Step(State.INSTALLED, State.LIVE, observed=True)], 3, [Recorder()])


def walks_as_decided(current: State | None, observed: State, sequence: int) -> None:
    recorder = Recorder()
    steps = decide(current, observed).steps
    assert walk(current, steps, sequence, [recorder]) == sequence + len(steps)
    assert recorder.seen == [
        (step.from_state, step.to_state, step.observed, sequence + n) for n, step in enumerate(steps, 1)
    ]


def test_walks_of_different_sandboxes_in_a_row_each_start_from_their_own_state() -> None:
    """One thread's walks share a machine: each starts where its sandbox is, whatever the walk before left,
    including after a walk into a final state and after a walk that was refused."""
    walks_as_decided(None, State.PENDING_INSTALL, 0)
    walks_as_decided(State.INSTALLED, State.LIVE, 5)  # final: that machine takes no more events
    walks_as_decided(None, State.CLAIMED, 0)
    walks_as_decided(State.PENDING_ONBOARDING, State.INSTALLED, 2)
    walks_as_decided(State.UNCLAIMED, State.EXPIRED, 1)  # final
    walks_as_decided(State.CLAIMED, State.PENDING_INSTALL, 7)
    with pytest.raises(TransitionForbidden):
        walk(State.INSTALLED, [Step(State.INSTALLED, State.UNCLAIMED, observed=True)], 3, [Recorder()])
    walks_as_decided(State.PENDING_INSTALL, State.LIVE, 4)
