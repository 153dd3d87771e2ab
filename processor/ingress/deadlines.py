"""Deadlines for request tasks, checked by one periodic timer instead of a timer per request.

`asyncio.timeout` schedules and cancels a loop timer on every use; the ingress needs two per delivery (the body
read and the publish), which cost about as much as verifying the signature. Here a deadline is an entry in a
dict, and one sweep every `resolution_s` cancels the tasks whose time is up, so a deadline fires up to
`resolution_s` late: fine for limits of seconds.

    deadlines.start(task, 10.0)
    try:
        await work()
    except asyncio.CancelledError:
        if deadlines.expired(task):   # our cancellation: the task carries on and answers
            ...
        raise                        # somebody else's (shutdown): propagate
    finally:
        deadlines.stop(task)
"""

from __future__ import annotations

import asyncio


class Deadlines:
    """Per-task deadlines on the running loop; not thread-safe (one loop, one instance)."""

    def __init__(self, resolution_s: float = 0.1) -> None:
        self.resolution_s = resolution_s
        self._due: dict[asyncio.Task[object], float] = {}
        self._fired: set[asyncio.Task[object]] = set()
        self._sweeping: asyncio.TimerHandle | None = None

    def start(self, task: asyncio.Task[object], seconds: float) -> None:
        """Cancel `task` once `seconds` have passed (a later call replaces the deadline)."""
        loop = task.get_loop()
        self._due[task] = loop.time() + seconds
        if self._sweeping is None:
            self._sweeping = loop.call_later(self.resolution_s, self._sweep, loop)

    def expired(self, task: asyncio.Task[object]) -> bool:
        """True once for a task this cancelled; its pending cancellation is withdrawn (`Task.uncancel`)."""
        if task in self._fired:
            self._fired.discard(task)
            task.uncancel()
            return True
        return False

    def stop(self, task: asyncio.Task[object]) -> None:
        """Forget the task's deadline (call in `finally`)."""
        self._due.pop(task, None)
        self._fired.discard(task)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        for task, due in list(self._due.items()):
            if due <= now:
                del self._due[task]
                self._fired.add(task)
                task.cancel()
        # the timer runs only while some deadline is pending, so an idle app schedules nothing
        self._sweeping = loop.call_later(self.resolution_s, self._sweep, loop) if self._due else None
