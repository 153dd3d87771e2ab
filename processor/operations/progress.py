"""A progress bar for long operator jobs, drawn on stderr; library code reports through the `Progress` protocol."""

from __future__ import annotations

import sys
import time
from typing import Protocol, TextIO


class Progress(Protocol):
    """Told how much work there is (when known) and how much is done."""

    def total(self, count: int | None) -> None: ...

    def advance(self, count: int = 1) -> None: ...

    def close(self) -> None: ...


class NoProgress:
    """Progress nobody watches (tests, HTTP, a non-interactive run)."""

    def total(self, count: int | None) -> None:
        pass

    def advance(self, count: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


class ProgressBar:
    """`label [#####-----] 512/1000 (12.3/s) detail`, redrawn in place on a terminal at most every
    `interval_s`; on anything else (a log file, a pipe) printed as a plain line at most every `plain_interval_s`."""

    def __init__(
        self,
        label: str,
        stream: TextIO | None = None,
        *,
        width: int = 30,
        interval_s: float = 0.1,
        plain_interval_s: float = 2.0,
    ) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.width = width
        self.tty = self.stream.isatty()
        self.interval_s = interval_s if self.tty else plain_interval_s
        self._total: int | None = None
        self._done = 0
        self._detail = ""
        self._started = time.monotonic()
        self._drawn = 0.0
        self._visible = False

    def total(self, count: int | None) -> None:
        self._total = count
        self._draw(force=True)

    def advance(self, count: int = 1) -> None:
        self._done += count
        self._draw()

    def update(self, done: int, detail: str = "") -> None:
        """Set how much is done (not added to it) and a short text shown after the figures."""
        self._done = done
        self._detail = detail
        self._draw(force=done == self._total)

    def close(self) -> None:
        if self._visible:
            self._draw(force=True)
            if self.tty:
                self.stream.write("\n")
                self.stream.flush()
            self._visible = False

    def _draw(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._drawn < self.interval_s:
            return
        self._drawn = now
        rate = self._done / max(now - self._started, 1e-6)
        if self._total:
            filled = min(self.width, self.width * self._done // self._total)
            bar = f"[{'#' * filled}{'-' * (self.width - filled)}] {self._done}/{self._total}"
        else:
            bar = f"{self._done}"
        line = f"{self.label} {bar} ({rate:.1f}/s){' ' + self._detail if self._detail else ''}"
        # on a terminal the line is redrawn in place (and cleared, as it may shrink); elsewhere one per line
        self.stream.write(f"\r\033[K{line}" if self.tty else f"{line}\n")
        self.stream.flush()
        self._visible = True


def progress_for(label: str, *, wanted: bool | None, stream: TextIO | None = None) -> Progress:
    """A bar when asked for (`wanted=True`) or, when not said (`None`), when the stream is a terminal."""
    stream = stream or sys.stderr
    show = wanted if wanted is not None else stream.isatty()
    return ProgressBar(label, stream) if show else NoProgress()
