"""Monotonic progress: what an observed state means for a sandbox whose current state we know (or not).

`decide(current, observed)` is pure and cheap (no machine is instantiated), and reads the allowed transitions
from the loaded statechart, so the chart file stays the single source of truth:

- observed ahead of current → `advance`: the steps along the chart from current to observed. Steps through
  states nobody reported are inferred (`observed=False`); the last step is the observation (`observed=True`).
  An unknown sandbox (current None) first enters the chart's initial state (a step with `from_state=None`).
- observed equal to or behind current → `stale`: a duplicate or a late delivery; nothing changes.
- observed not reachable from current, and current not reachable from it → `anomaly` (e.g. expired after
  claimed); the state stays as it is.

Path choice: when several paths lead to the observed state (`claimed → pending_install` directly for an
existing account, or via `pending_onboarding` for a new one), the shortest is walked. Nothing told us that
the skipped optional state happened, so we publish no state that may never have existed; a late observation
of it is then stale, as it is behind the state we already reached.
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from processor.lifecycle.machine import ChartError, chart, transitions
from processor.lifecycle.state import State


class Outcome(StrEnum):
    """What an observation does to a sandbox; also the metric label."""

    ADVANCE = "advance"
    STALE = "stale"
    ANOMALY = "anomaly"


@dataclass(frozen=True, slots=True)
class Step:
    """One state entered: `from_state` is None for the first state of a sandbox."""

    from_state: State | None
    to_state: State
    #: False for an intermediate state walked through because Stripe's report of it was missed or late
    observed: bool


@dataclass(frozen=True, slots=True)
class Decision:
    """The result of `decide`: steps to apply (advance), or why nothing changes (stale, anomaly)."""

    outcome: Outcome
    steps: tuple[Step, ...] = ()
    reason: str | None = None

    @property
    def stale(self) -> bool:
        return self.outcome is Outcome.STALE

    @property
    def anomaly(self) -> bool:
        return self.outcome is Outcome.ANOMALY

    @property
    def final_state(self) -> State | None:
        """The state after applying the steps; None when nothing changes."""
        return self.steps[-1].to_state if self.steps else None


@dataclass(frozen=True, slots=True)
class _Graph:
    initial: State
    #: shortest path (source excluded) from each state to every state reachable from it
    paths: Mapping[State, Mapping[State, tuple[State, ...]]]


def _shortest_paths(successors: Mapping[State, list[State]], source: State) -> dict[State, tuple[State, ...]]:
    # breadth-first with successors in chart order: the shortest path, ties always broken the same way
    found: dict[State, tuple[State, ...]] = {source: ()}
    queue = deque([source])
    while queue:
        state = queue.popleft()
        for nxt in successors.get(state, ()):
            if nxt not in found:
                found[nxt] = (*found[state], nxt)
                queue.append(nxt)
    return found


@functools.cache
def _graph() -> _Graph:
    successors: dict[State, list[State]] = {}
    for source, target in transitions():
        successors.setdefault(source, []).append(target)
    initial = chart().initial_state
    if initial is None:  # chart() already refuses such a file
        raise ChartError("the statechart has no initial state")
    paths = {state: _shortest_paths(successors, state) for state in State}
    for state, reachable in paths.items():
        if any(state in paths[other] for other in reachable if other != state):
            # "behind" and "monotonic" only mean something if no state can be entered twice
            raise ChartError(f"the statechart has a cycle through {state}")
    return _Graph(State(initial.id), paths)


def decide(current: State | None, observed: State) -> Decision:
    """What observing `observed` does to a sandbox now in `current` (None: never seen before)."""
    graph = _graph()
    if current is None:
        from_initial = graph.paths[graph.initial].get(observed)
        if from_initial is None:  # only with a chart that has a state unreachable from its initial state
            return Decision(Outcome.ANOMALY, reason=f"{observed} is not reachable from {graph.initial}")
        return Decision(Outcome.ADVANCE, _steps(None, (graph.initial, *from_initial)))
    ahead = graph.paths[current].get(observed)
    if ahead:
        return Decision(Outcome.ADVANCE, _steps(current, ahead))
    if observed == current:
        return Decision(Outcome.STALE, reason=f"already {current}")
    if current in graph.paths[observed]:
        return Decision(Outcome.STALE, reason=f"{observed} is behind {current}")
    return Decision(Outcome.ANOMALY, reason=f"{observed} cannot follow {current}")


def _steps(current: State | None, path: tuple[State, ...]) -> tuple[Step, ...]:
    sources = (current, *path[:-1])
    last = len(path) - 1
    return tuple(
        Step(source, target, observed=index == last)
        for index, (source, target) in enumerate(zip(sources, path, strict=True))
    )
