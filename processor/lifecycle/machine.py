"""The lifecycle statechart, loaded from statemachine/lifecycle.yaml, and a strict way to drive it.

The chart file is the single source of the allowed transitions: `transitions()` reads them from the loaded
class, so progress and the tests check the file itself, not a copy of it.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from statemachine import StateChart
from statemachine.io import load

from processor.errors import ProcessorError
from processor.lifecycle.state import State
from processor.resources import data_dir

CHART_FILE = "lifecycle.yaml"


class ChartError(ProcessorError):
    """The statechart file does not describe the lifecycle this code was written for."""

    code = "invalid_statechart"


class TransitionForbidden(ProcessorError):
    """The chart has no transition from one state to another."""

    code = "transition_forbidden"

    def __init__(self, source: State | None, target: State) -> None:
        super().__init__(f"the lifecycle has no transition from {source} to {target}")
        self.source = source
        self.target = target


def chart_path() -> Path:
    """Where the statechart file is, installed or in a source checkout."""
    return data_dir("statemachine") / CHART_FILE


@functools.cache
def chart() -> type[StateChart[Any]]:
    """The statechart class loaded from the chart file (once per process)."""
    cls = load(chart_path(), validate=True)
    # StateChart follows SCXML: an error in a callback becomes an `error.execution` event and an event
    # without a transition is ignored. Both would hide bugs and forbidden moves, so this chart raises.
    cls.catch_errors_as_events = False
    cls.allow_event_without_transition = False
    # The loader gives a loaded chart SCXML's system variables (`_event`, `_sessionid`, `_name`, `_ioprocessors`)
    # through a `prepare_event` hook that builds them for every callback of every event: a quarter to a third of
    # the CPU of a `send` here. Only expressions in the file (guards, actions) could read them; it has none, and
    # our handlers take the state entered, not `_event`.
    if "prepare_event" in vars(cls):
        delattr(cls, "prepare_event")
    ids = {state.id for state in cls.states_map.values()}
    if ids != {state.value for state in State}:
        raise ChartError(f"{chart_path()} declares states {sorted(ids)}, expected {sorted(State)}")
    if cls.initial_state is None or cls.initial_state.id != State.UNCLAIMED:
        raise ChartError(f"{chart_path()} must start in {State.UNCLAIMED}")
    return cls


@functools.cache
def transitions() -> dict[tuple[State, State], str]:
    """Every allowed (source, target) pair of the chart, with the event that takes it."""
    allowed: dict[tuple[State, State], str] = {}
    for state in chart().states_map.values():
        for transition in state.transitions:
            if len(transition.targets) != 1 or len(list(transition.events)) != 1:
                raise ChartError(f"{chart_path()}: every transition needs one event and one target")
            pair = (State(transition.source.id), State(transition.target.id))
            if pair in allowed:
                # a transition is identified by its endpoints (and published as `{sandbox}:{target}`)
                raise ChartError(f"{chart_path()}: two transitions from {pair[0]} to {pair[1]}")
            allowed[pair] = str(transition.event)
    return allowed


class SandboxModel:
    """The object the statechart keeps its state on (`state_field="state"`), so the state is ours, not the
    machine's: the consumer loads it from the database and saves it back."""

    __slots__ = ("_state",)

    def __init__(self, state: State | None = None) -> None:
        self._state = state

    @property
    def state(self) -> State | None:
        return self._state

    @state.setter
    def state(self, value: str | None) -> None:
        # the library writes the state id as a plain str; keep our enum
        self._state = None if value is None else State(value)

    def __repr__(self) -> str:
        return f"SandboxModel(state={self._state!r})"


class Lifecycle:
    """Drives one sandbox's model through the chart; forbidden moves and callback errors raise."""

    def __init__(self, model: SandboxModel, listeners: Iterable[object] = ()) -> None:
        self.model = model
        # a model without a state enters the initial state here, running its entry callbacks
        self._machine = chart()(model=model, state_field="state", listeners=list(listeners))

    @property
    def state(self) -> State:
        """The current state (always set once the machine is started)."""
        state = self.model.state
        if state is None:  # the statechart sets the initial state when it starts; unreachable
            raise ChartError("the statechart did not enter its initial state")
        return state

    @property
    def initial(self) -> State:
        """The chart's initial state, where a new sandbox begins."""
        initial = self._machine.initial_state
        if initial is None:  # chart() refuses such a file; unreachable
            raise ChartError("the statechart has no initial state")
        return State(initial.id)

    @property
    def terminated(self) -> bool:
        """Whether the machine entered a final state: it takes no event after that, not even after `restart`."""
        return bool(self._machine.is_terminated)

    def restart(self, state: State | None) -> None:
        """Put the machine in `state` as if it had just been created for a model in that state: no callback
        runs for `state`; None enters the chart's initial state, running its entry callbacks. For reusing one
        machine (building one costs more than walking it): only between completed sends, never once
        `terminated`."""
        self._machine.current_state_value = None if state is None else state.value
        if state is None:
            self._machine.activate_initial_state()

    def advance(self, target: State, **event_kwargs: Any) -> None:
        """Take the chart's transition from the current state to `target`, or raise `TransitionForbidden`."""
        source = self.state
        event = transitions().get((source, target))
        if event is None:
            raise TransitionForbidden(source, target)
        self._machine.send(event, **event_kwargs)

    def send(self, event: str, **event_kwargs: Any) -> None:
        """Send a chart event by name; `TransitionNotAllowed` if the current state has no such transition."""
        self._machine.send(event, **event_kwargs)
