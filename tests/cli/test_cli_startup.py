"""The command line starts light: one command imports only its own module, and `sandbox show` (run thousands of
times by scripts) loads no Kafka, Stripe, HTTP-server or statechart library."""

from __future__ import annotations

import subprocess
import sys

from processor.cli.main import COMMAND_MODULES, build_parser

#: libraries that cost most of a second to import and that reading one sandbox does not need
HEAVY = ("aiokafka", "stripe", "aiohttp", "statemachine", "uvicorn", "starlette", "prometheus_client")


def _commands(parser: object) -> set[str]:
    subparsers = next(a for a in parser._actions if a.dest == "command")  # type: ignore[attr-defined]
    return set(subparsers.choices)


def test_each_command_module_registers_the_command_it_is_named_after() -> None:
    """`processor NAME ...` builds the parser of NAME's module alone, and it holds exactly that command."""
    names = [module.rpartition(".")[2] for module in COMMAND_MODULES]
    assert _commands(build_parser()) == set(names)
    for name in names:
        assert _commands(build_parser(name)) == {name}


def test_sandbox_show_imports_nothing_heavy() -> None:
    """Parsing `sandbox show --json` and loading what its handler runs leaves every heavy library unimported."""
    probe = (
        "import sys\n"
        "from processor.cli.main import build_parser\n"
        "args = build_parser('sandbox').parse_args(['sandbox', 'show', 'x', '--json'])\n"
        "import processor.db.pool, processor.operations.inspect, processor.settings\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60)
    assert result.stdout.strip() == "[]"
