"""Walking a sandbox along a decided path through the loaded statechart, with handlers as its listener.

`decide()` chooses the path (pure, no machine); `walk()` makes the python-statemachine chart execute it, one
`send` per transition. What happens when a state is entered (a history row, a message for downstream services,
a counter) is a `StateHandler`: the machine's listener calls every handler for every state entered, so adding a
reaction to a state means adding a handler, in one place. A forbidden step raises `TransitionForbidden` before
any handler ran for it.

A new sandbox's first state is the chart's initial state, which no transition enters: the machine is put there
like a known sandbox's machine is put in its stored state, and the listener hears the entry from `walk` itself.
Having the machine re-run its start instead (`activate_initial_state`) cost as much as a `send`, for a step
that carries no event and that the chart cannot refuse.
"""

from __future__ import annotations

import threading
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
    would walk differently. One listener serves every walk of its machine (`start` sets up the next one)."""

    def __init__(self) -> None:
        self._steps: Iterator[Step] = iter(())
        self.sequence = 0
        self._handlers: Sequence[StateHandler] = ()

    def start(self, steps: Sequence[Step], sequence: int, handlers: Sequence[StateHandler]) -> None:
        self._steps = iter(steps)
        self.sequence = sequence
        self._handlers = handlers

    def on_enter_state(self, state: Any, source: Any = None) -> None:
        self.entered(state.id)

    def entered(self, state_id: str) -> None:
        """The machine is in `state_id` now: it must be the next decided step's target."""
        step = next(self._steps, None)
        if step is None or str(step.to_state) != state_id:
            raise ChartError(f"the statechart entered {state_id}, the decided path expected {step}")
        self.sequence += 1
        for handler in self._handlers:
            handler.entered(step, self.sequence)


class _Walker:
    """A machine of the chart with its listener, reused walk after walk until a walk ends in a final state:
    building a machine (its callbacks and listener registered, its states bound) cost more than the sends of a
    walk. Created in a state, so that no callback runs when it is built."""

    def __init__(self) -> None:
        self.listener = _Listener()
        self.lifecycle = Lifecycle(SandboxModel(State.UNCLAIMED), listeners=[self.listener])


#: one idle walker per thread (a machine is not for two walks at once)
_idle = threading.local()


def walk(current: State | None, steps: Sequence[Step], sequence: int, handlers: Sequence[StateHandler]) -> int:
    """Drive a sandbox now in `current` (None: new) through `steps`; return its last sequence number."""
    walker: _Walker = getattr(_idle, "walker", None) or _Walker()
    # taken while it walks: a walk that raises may leave the machine half-way through a send, so the next
    # walk gets a new one; a handler that walks another sandbox meanwhile gets its own
    _idle.walker = None
    walker.listener.start(steps, sequence, handlers)
    lifecycle = walker.lifecycle
    if current is None:  # a new sandbox: its first step is the initial state, where the machine is put
        lifecycle.restart(lifecycle.initial)
        walker.listener.entered(lifecycle.initial.value)
    else:
        lifecycle.restart(current)
    for step in steps:
        if step.from_state is not None:
            lifecycle.advance(step.to_state)
    if lifecycle.state != (steps[-1].to_state if steps else current):
        raise ChartError(f"the walk ended in {lifecycle.state}, not in {steps[-1].to_state}")
    if not lifecycle.terminated:  # a machine that entered a final state takes no more events
        _idle.walker = walker
    return walker.listener.sequence
