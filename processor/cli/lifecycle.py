"""`processor lifecycle diagram [--check]`: regenerate (or check) the rendered lifecycle diagram."""

from __future__ import annotations

import argparse
import sys

from processor.lifecycle import diagram


def _diagram(args: argparse.Namespace) -> int:
    if args.check:
        if diagram.is_current():
            print(f"{diagram.diagram_path()} is up to date")
            return 0
        print(f"{diagram.diagram_path()} is stale: run `{diagram.REGENERATE}`", file=sys.stderr)
        return 1
    print(f"wrote {diagram.write()}")
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("lifecycle", help="the sandbox lifecycle statechart")
    actions = parser.add_subparsers(dest="lifecycle_action", required=True)
    render = actions.add_parser("diagram", help="render statemachine/lifecycle.md from the statechart")
    render.add_argument("--check", action="store_true", help="exit 1 if the checked-in diagram is stale")
    render.set_defaults(handler=_diagram)
