"""Walking a sandbox along a decided path through the loaded statechart, with handlers as its listener.

`decide()` chooses the path (pure, no machine); `walk()` makes the python-statemachine chart execute it, one
`send` per step, the sandbox's first state included (entered when the machine starts). What happens when a
state is entered (a history row, a message for downstream services, a counter) is a `StateHandler`: the
machine calls every handler for every state it enters, so adding a reaction to a state means adding a
handler, in one place. A forbidden step raises `TransitionForbidden` before any handler ran for it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol

from processor.lifecycle.decision import Step
from processor.lifecycle.machine import ChartError, Lifecycle, SandboxModel
from processor.lifecycle.state import State


class StateHandler(Protocol):
    """Reacts to one state entered by one sandbox; `sequence` numbers its states from 1."""

    def entered(self, step: Step, sequence: int) -> None: ...


class _Listener:
    """The machine's listener: matches each state the chart enters with the decided step and calls the
    handlers. The chart, not the decision, is what enters states; the check catches a decision that the chart
    would walk differently."""

    def __init__(self, steps: Sequence[Step], sequence: int, handlers: Sequence[StateHandler]) -> None:
        self._steps: Iterator[Step] = iter(steps)
        self.sequence = sequence
        self._handlers = handlers

    def on_enter_state(self, state: Any, source: Any = None) -> None:
        step = next(self._steps, None)
        if step is None or str(step.to_state) != state.id:
            raise ChartError(f"the statechart entered {state.id}, the decided path expected {step}")
        self.sequence += 1
        for handler in self._handlers:
            handler.entered(step, self.sequence)


def walk(current: State | None, steps: Sequence[Step], sequence: int, handlers: Sequence[StateHandler]) -> int:
    """Drive a sandbox now in `current` (None: new) through `steps`; return its last sequence number."""
    listener = _Listener(steps, sequence, handlers)
    # a model without a state makes the machine enter the chart's initial state: that is the first step
    lifecycle = Lifecycle(SandboxModel(current), listeners=[listener])
    for step in steps:
        if step.from_state is not None:
            lifecycle.advance(step.to_state)
    if lifecycle.state != (steps[-1].to_state if steps else current):
        raise ChartError(f"the walk ended in {lifecycle.state}, not in {steps[-1].to_state}")
    return listener.sequence
