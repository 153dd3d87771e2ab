"""The server-drawn charts: what they draw follows the figures, and text from the data cannot become markup."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from processor.console.charts import Bar, bar_chart, transitions_chart
from processor.operations.overview import HourCount


def test_bar_lengths_follow_the_values_and_labels_are_escaped() -> None:
    """The longest bar is the largest value, half the value draws half the length, a zero draws none, and a
    label holding markup (an outcome or event type comes from stored data) is shown as text."""
    svg = str(bar_chart([Bar("<script>alert(1)</script>", 10), Bar("half", 5), Bar("none", 0)], "t"))
    widths = [int(w) for w in re.findall(r'<rect x="\d+" y="\d+" width="(\d+)"', svg)]
    assert widths[0] == 2 * widths[1] and widths[2] == 0
    assert "<script>" not in svg and "&lt;script&gt;alert(1)&lt;/script&gt;" in svg
    assert 'role="img"' in svg and "<title" in svg and "<desc" in svg


def test_transitions_chart_stacks_each_hour_and_describes_the_busiest() -> None:
    """An hour's column is as tall as its transitions (stacked by state entered); the description a screen
    reader reads gives the total and the busiest hour."""
    start = datetime(2026, 12, 1, 10, tzinfo=UTC)
    hours = [HourCount(start, {"claimed": 4, "live": 4}), HourCount(start + timedelta(hours=1), {"claimed": 2}),
             HourCount(start + timedelta(hours=2), {})]
    svg = str(transitions_chart(hours, "Transitions per hour"))
    heights = [float(h) for h in re.findall(r'height="([\d.]+)" fill=', svg)]
    assert len(heights) == 3  # two states in the first hour, one in the second, nothing in the third
    assert abs(heights[0] + heights[1] - 4 * heights[2]) < 0.5
    assert "10 transitions in 3 hours; the busiest hour had 8." in svg
