"""The rendered lifecycle diagram checked in beside the chart (statemachine/lifecycle.md).

Rendered by the library's own diagram tooling as text (Mermaid, which GitHub and most viewers draw, plus the
transition table), so regenerating needs no Graphviz and a stale file is found by comparing text.
"""

from __future__ import annotations

from pathlib import Path

from statemachine.contrib.diagram import formatter

from processor.lifecycle.machine import CHART_FILE, chart, chart_path

DIAGRAM_FILE = "lifecycle.md"
REGENERATE = "processor lifecycle diagram"


def diagram_path() -> Path:
    """Where the checked-in diagram lives: next to the chart."""
    return chart_path().with_name(DIAGRAM_FILE)


def render() -> str:
    """The diagram document for the current chart."""
    cls = chart()
    mermaid = formatter.render(cls, "mermaid").rstrip("\n")
    table = formatter.render(cls, "md").rstrip("\n")
    return (
        f"# Sandbox lifecycle\n\n"
        f"<!-- Generated from {CHART_FILE} by `{REGENERATE}`; do not edit by hand. -->\n\n"
        f"```mermaid\n{mermaid}\n```\n\n"
        f"{table}\n"
    )


def is_current() -> bool:
    """Whether the checked-in diagram matches the chart."""
    path = diagram_path()
    return path.is_file() and path.read_text(encoding="utf-8") == render()


def write() -> Path:
    """Regenerate the checked-in diagram; returns its path."""
    path = diagram_path()
    path.write_text(render(), encoding="utf-8")
    return path
