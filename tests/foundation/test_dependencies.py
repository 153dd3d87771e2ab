"""Dependencies: images and CI install the exact versions the suite passed on, and test tools stay out of the
runtime."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
#: tools only the tests and linters use: an image that carries them has more to patch and more to attack
TEST_TOOLS = {"pytest", "pytest-asyncio", "pytest-timeout", "hypothesis", "ruff", "mypy"}


def _project() -> dict[str, Any]:
    project: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return project


def _pins() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not an exact pin (name==version)"
            pins[canonicalize_name(name)] = version
    return pins


def test_every_dependency_is_pinned_within_its_range() -> None:
    """Each runtime and dev dependency of pyproject.toml has an exact pin in constraints.txt that its range allows
    (so changing a range without re-pinning fails here, not in an image build)."""
    project = _project()
    requirements = [Requirement(r) for r in project["dependencies"]]
    requirements += [Requirement(r) for r in project["optional-dependencies"]["dev"]]
    pins = _pins()
    for requirement in requirements:
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is not pinned in constraints.txt (run make constraints)"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"constraints.txt pins {name}=={pins[name]}, outside pyproject's {requirement}")


def test_image_and_ci_install_with_the_constraints() -> None:
    """The Dockerfile's and the Makefile's installs both pass -c constraints.txt (and the build context has it)."""
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    assert re.search(r"pip .*install [^\n]*-c constraints\.txt", dockerfile)
    assert "!constraints.txt" in (ROOT / "deploy" / "Dockerfile.dockerignore").read_text()
    assert re.search(r"pip install [^\n]*-c constraints\.txt -e '\.\[dev\]'", (ROOT / "Makefile").read_text())


def test_test_tools_are_not_runtime_dependencies() -> None:
    """pytest-asyncio and the other test tools are in the dev extra only."""
    runtime = {canonicalize_name(Requirement(r).name) for r in _project()["dependencies"]}
    assert not runtime & TEST_TOOLS, sorted(runtime & TEST_TOOLS)


def test_the_chart_validator_is_a_runtime_dependency() -> None:
    """The consumer loads the lifecycle chart with python-statemachine's validation on, which imports jsonschema:
    an install without the dev extra (the image) failed at start when it was a test-only dependency."""
    runtime = {canonicalize_name(Requirement(r).name) for r in _project()["dependencies"]}
    assert "jsonschema" in runtime
    assert "validate=True" in (ROOT / "processor" / "lifecycle" / "machine.py").read_text()
