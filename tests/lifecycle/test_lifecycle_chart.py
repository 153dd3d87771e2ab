"""The statechart file: its states, every allowed and forbidden transition, strictness, and its diagram."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from statemachine.exceptions import TransitionNotAllowed

from processor.cli.main import main
from processor.lifecycle import diagram
from processor.lifecycle.machine import Lifecycle, SandboxModel, TransitionForbidden, chart, transitions
from processor.lifecycle.state import State
from processor.runtime import logs

S = State
#: the lifecycle of ARCHITECTURE §5, written out independently of the chart file it checks
ALLOWED = {
    (S.UNCLAIMED, S.CLAIMED),
    (S.UNCLAIMED, S.EXPIRED),
    (S.CLAIMED, S.PENDING_ONBOARDING),
    (S.CLAIMED, S.PENDING_INSTALL),  # claimed into an existing account: no onboarding
    (S.PENDING_ONBOARDING, S.PENDING_INSTALL),
    (S.PENDING_INSTALL, S.INSTALLED),
    (S.INSTALLED, S.LIVE),
}
FORBIDDEN = sorted(set(itertools.product(State, State)) - ALLOWED)


def test_chart_declares_exactly_the_lifecycle_states() -> None:
    """The chart file has the seven lifecycle states, starts unclaimed and ends in live or expired."""
    cls = chart()
    assert {state.id for state in cls.states_map.values()} == set(State)
    assert cls.initial_state is not None and cls.initial_state.id == S.UNCLAIMED
    assert {state.id for state in cls.final_states} == {S.LIVE, S.EXPIRED}


def test_chart_allows_exactly_the_lifecycle_transitions() -> None:
    """The transitions read from the chart file are exactly the allowed ones, nothing more."""
    assert set(transitions()) == ALLOWED


def test_new_sandbox_starts_unclaimed() -> None:
    """A model without a state is put into the initial state by the chart."""
    model = SandboxModel()
    Lifecycle(model)
    assert model.state is S.UNCLAIMED


@pytest.mark.parametrize(("source", "target"), sorted(ALLOWED))
def test_allowed_transition_moves_the_model(source: State, target: State) -> None:
    """Each allowed transition, driven through the loaded chart, leaves the model in the target state."""
    model = SandboxModel(source)
    Lifecycle(model).advance(target)
    assert model.state is target


@pytest.mark.parametrize(("source", "target"), sorted(ALLOWED))
def test_allowed_transition_by_its_chart_event(source: State, target: State) -> None:
    """Sending the chart's event for an allowed transition reaches its target."""
    model = SandboxModel(source)
    Lifecycle(model).send(transitions()[source, target])
    assert model.state is target


@pytest.mark.parametrize(("source", "target"), FORBIDDEN)
def test_forbidden_transition_raises_and_keeps_the_state(source: State, target: State) -> None:
    """A forbidden move raises TransitionForbidden and the model keeps its state."""
    model = SandboxModel(source)
    with pytest.raises(TransitionForbidden) as raised:
        Lifecycle(model).advance(target)
    assert (raised.value.source, raised.value.target) == (source, target)
    assert model.state is source


@pytest.mark.parametrize(("source", "target"), FORBIDDEN)
def test_no_chart_event_takes_a_forbidden_transition(source: State, target: State) -> None:
    """Whatever event of the chart is sent in `source`, the machine never lands in `target`."""
    for event in sorted(set(transitions().values())):
        model = SandboxModel(source)
        try:
            Lifecycle(model).send(event)
        except TransitionNotAllowed:
            assert model.state is source
        if source != target:
            assert model.state is not target, f"{event} took {source} to {target}"


def test_callback_error_surfaces_instead_of_becoming_an_event() -> None:
    """An exception in a listener callback reaches the caller (no silent error.execution event)."""

    class Failing:
        def on_enter_claimed(self) -> None:
            raise RuntimeError("history write failed")

    model = SandboxModel(S.UNCLAIMED)
    with pytest.raises(RuntimeError, match="history write failed"):
        Lifecycle(model, listeners=[Failing()]).advance(S.CLAIMED)


def test_listener_sees_each_transition() -> None:
    """Listeners are called with the source and target of each transition they observe."""
    seen: list[tuple[str, str]] = []

    class Recorder:
        def after_transition(self, source: object, target: object) -> None:
            seen.append((str(getattr(source, "id", source)), str(getattr(target, "id", target))))

    lifecycle = Lifecycle(SandboxModel(S.CLAIMED), listeners=[Recorder()])
    lifecycle.advance(S.PENDING_INSTALL)
    lifecycle.advance(S.INSTALLED)
    assert seen == [("claimed", "pending_install"), ("pending_install", "installed")]


def test_checked_in_diagram_is_current() -> None:
    """statemachine/lifecycle.md matches the chart; if this fails run `processor lifecycle diagram`."""
    assert diagram.diagram_path().read_text(encoding="utf-8") == diagram.render()


def test_diagram_shows_every_transition() -> None:
    """The rendered Mermaid diagram draws an arrow for every allowed transition."""
    text = diagram.render()
    for source, target in ALLOWED:
        assert f"{source} --> {target}" in text


def test_diagram_check_command_fails_on_a_stale_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`processor lifecycle diagram --check` exits 1 on a stale file and 0 once regenerated."""
    stale = tmp_path / "lifecycle.md"
    stale.write_text(diagram.render().replace("pending_install --> installed", "pending_install --> live"))
    monkeypatch.setattr(diagram, "diagram_path", lambda: stale)
    # main() sets up the process's logging, to this test's captured stderr: left in place, its handler wrote to
    # that closed stream in every later test of the session ("I/O operation on closed file")
    monkeypatch.setattr(logs, "configure", lambda options: None)
    assert main(["lifecycle", "diagram", "--check"]) == 1
    assert "stale" in capsys.readouterr().err
    assert main(["lifecycle", "diagram"]) == 0
    assert stale.read_text() == diagram.render()
    assert main(["lifecycle", "diagram", "--check"]) == 0
