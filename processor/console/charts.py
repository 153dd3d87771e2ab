"""Charts drawn on the server as inline SVG: no script, no library, nothing fetched, so they work offline.

Each chart is a `role="img"` SVG with a title and a description for screen readers; the pages put the same
figures in a table next to it. The view boxes are narrow (400 units), so on a phone the text stays legible
when the SVG is scaled to the screen's width, and on a laptop the CSS caps its width.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

from processor.operations.overview import STATES, HourCount

#: one colour per state, each at least 4.5:1 against white (WCAG AA for the text drawn in it)
STATE_COLOURS = {
    "unclaimed": "#4b5563",
    "claimed": "#1d4ed8",
    "pending_onboarding": "#b45309",
    "pending_install": "#6d28d9",
    "installed": "#0f766e",
    "live": "#15803d",
    "expired": "#b91c1c",
}
NEUTRAL = "#374151"
WIDTH = 400
_ids = itertools.count(1)


@dataclass(frozen=True, slots=True)
class Bar:
    label: str
    value: int
    colour: str = NEUTRAL


def _svg(height: int, title: str, desc: str, body: str) -> Markup:
    n = next(_ids)
    # every text in `body` and here went through escape(); numbers and colours are ours
    return Markup(  # noqa: S704
        f'<svg viewBox="0 0 {WIDTH} {height}" role="img" aria-labelledby="chart-t{n} chart-d{n}"'
        f' xmlns="http://www.w3.org/2000/svg" class="chart-svg">'
        f'<title id="chart-t{n}">{escape(title)}</title><desc id="chart-d{n}">{escape(desc)}</desc>{body}</svg>'
    )


def bar_chart(bars: Sequence[Bar], title: str) -> Markup:
    """Horizontal bars, one row per item: label, bar, value."""
    row, label_w, value_w = 30, 150, 56
    span = WIDTH - label_w - value_w
    top = max((b.value for b in bars), default=0) or 1
    parts = []
    for i, bar in enumerate(bars):
        y = i * row
        width = 0 if bar.value == 0 else max(2, round(span * bar.value / top))
        parts.append(
            f'<text x="{label_w - 8}" y="{y + 20}" text-anchor="end" class="chart-label">{escape(bar.label)}</text>'
            f'<rect x="{label_w}" y="{y + 6}" width="{width}" height="{row - 10}" rx="3" fill="{bar.colour}">'
            f"<title>{escape(bar.label)}: {bar.value}</title></rect>"
            f'<text x="{label_w + width + 6}" y="{y + 20}" class="chart-value">{bar.value}</text>'
        )
    desc = "; ".join(f"{b.label}: {b.value}" for b in bars)
    return _svg(max(row, row * len(bars)), title, desc, "".join(parts))


def _hour_label(count: HourCount, span_hours: int) -> str:
    return count.hour.strftime("%H:00" if span_hours <= 48 else "%d %b")


def transitions_chart(hours: Sequence[HourCount], title: str) -> Markup:
    """Columns per hour, stacked by the state entered, with a y scale and a time axis."""
    height, left, bottom, top_pad = 220, 34, 26, 10
    plot_h = height - bottom - top_pad
    plot_w = WIDTH - left - 6
    peak = max((h.total for h in hours), default=0)
    scale_top = max(1, peak)
    col = plot_w / max(1, len(hours))
    parts = [
        f'<line x1="{left}" y1="{top_pad + plot_h}" x2="{WIDTH - 6}" y2="{top_pad + plot_h}" class="chart-axis"/>',
        f'<line x1="{left}" y1="{top_pad}" x2="{WIDTH - 6}" y2="{top_pad}" class="chart-grid"/>',
        f'<text x="{left - 4}" y="{top_pad + 5}" text-anchor="end" class="chart-tick">{scale_top}</text>',
        f'<text x="{left - 4}" y="{top_pad + plot_h}" text-anchor="end" class="chart-tick">0</text>',
    ]
    label_every = max(1, len(hours) // 4)
    for i, hour in enumerate(hours):
        x = left + i * col
        y = float(top_pad + plot_h)
        for state in STATES:
            n = hour.counts.get(str(state), 0)
            if not n:
                continue
            h = plot_h * n / scale_top
            y -= h
            parts.append(
                f'<rect x="{x + col * 0.1:.1f}" y="{y:.1f}" width="{col * 0.8:.1f}" height="{h:.1f}"'
                f' fill="{STATE_COLOURS[str(state)]}"><title>{_hour_label(hour, len(hours))} UTC, {state}: {n}'
                "</title></rect>"
            )
        if i % label_every == 0:
            # the label sits under its column, kept inside the view box at either end
            centre = min(max(x + col / 2, left + 18), WIDTH - 20)
            parts.append(
                f'<text x="{centre:.1f}" y="{height - 8}" text-anchor="middle" class="chart-tick">'
                f"{_hour_label(hour, len(hours))}</text>"
            )
    total = sum(h.total for h in hours)
    desc = f"{total} transitions in {len(hours)} hours; the busiest hour had {peak}."
    return _svg(height, title, desc, "".join(parts))


def state_bars(counts: dict[str, int]) -> list[Bar]:
    return [Bar(str(s), counts.get(str(s), 0), STATE_COLOURS[str(s)]) for s in STATES]
