"""README's configuration table names every PROCESSOR_* / STRIPE_* variable the code reads, and only those."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: a whole environment variable name of ours (a literal that is only a prefix, `PROCESSOR_KAFKA_`, is not one)
VARIABLE = re.compile(r"(?:PROCESSOR|STRIPE)_[A-Z0-9_]*[A-Z0-9]")


def _read_by_the_code() -> set[str]:
    """Every string literal in processor/ that is a whole variable name: the code reads variables through
    `get("NAME")`, `environ.get("NAME")` or a constant holding the name, and names them in ConfigErrors."""
    names: set[str] = set()
    for path in (ROOT / "processor").rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        # `__all__` lists Python names (STRIPE_RETENTION is a constant), not environment variables
        exported = {
            id(item)
            for assign in ast.walk(tree)
            if isinstance(assign, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in assign.targets)
            for item in ast.walk(assign.value)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and VARIABLE.fullmatch(node.value):
                if id(node) not in exported:
                    names.add(node.value)
    return names


def _in_the_table() -> set[str]:
    """The variables of the first column of README's configuration table (`A` / `B` rows name two)."""
    text = (ROOT / "README.md").read_text()
    section = text.split("### Configuration (environment variables)", 1)[1].split("\n#", 1)[0]
    names: set[str] = set()
    for line in section.splitlines():
        if line.startswith("| `"):
            names |= set(VARIABLE.findall(line.split("|")[1]))
    return names


def test_the_code_reads_variables_through_literals_this_test_can_see() -> None:
    """The scan finds the variables Settings reads, so an empty scan cannot pass the test below."""
    assert {"PROCESSOR_DATABASE_URL", "STRIPE_API_KEY", "PROCESSOR_KAFKA_SECURITY_PROTOCOL"} <= _read_by_the_code()


def test_every_variable_the_code_reads_is_in_the_readme_table() -> None:
    """A variable missing from the table is a setting nobody can find; one only in the table is a stale row."""
    read, documented = _read_by_the_code(), _in_the_table()
    assert read - documented == set(), "read by processor/ but missing from README's configuration table"
    assert documented - read == set(), "in README's configuration table but read nowhere in processor/"
