"""The one progress bar: redrawn in place on a terminal, plain lines elsewhere."""

from __future__ import annotations

import io

from processor.operations.progress import ProgressBar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_the_bar_is_redrawn_in_place_and_ends_with_a_newline() -> None:
    out = Terminal()
    bar = ProgressBar("replay", out)
    bar.total(4)
    bar.advance(4)
    bar.close()
    text = out.getvalue()
    assert text.count("\r\033[K") >= 2 and text.endswith("\n")
    assert f"replay [{'#' * 30}] 4/4" in text


def test_elsewhere_each_drawing_is_a_line_of_its_own_with_the_detail() -> None:
    """A log file gets readable lines, not carriage returns; the detail follows the figures."""
    out = io.StringIO()
    bar = ProgressBar("", out, plain_interval_s=3600)
    bar.total(10)
    bar.update(3, "settling")  # within the interval: not drawn
    bar.update(10, "in step")  # the end is always drawn
    bar.close()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert lines[0].startswith(f" [{'-' * 30}] 0/10")
    assert lines[-1].startswith(f" [{'#' * 30}] 10/10") and lines[-1].endswith("in step")
    assert not any("3/10" in line for line in lines)
