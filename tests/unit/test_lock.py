"""requirements.lock (`make lock`) pins exactly pyproject's runtime dependencies, with hashes, so a
dependency added or changed without re-locking fails here rather than at a deploy."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s;\\]+)")
# uv writes `# via sms-outbox (pyproject.toml)` (or that line under `# via`) for a direct pin.
DIRECT = "sms-outbox (pyproject.toml)"


@dataclass
class Pin:
    name: str
    version: Version
    hashes: int = 0
    via: list[str] = field(default_factory=list)


def read_lock(text: str) -> list[Pin]:
    """The pins of a uv/pip-tools requirements file: name, version, hash count, `# via` lines."""
    pins: list[Pin] = []
    for line in text.splitlines():
        m = PIN.match(line)
        if m:
            pins.append(Pin(canonicalize_name(m["name"]), Version(m["version"])))
        elif pins and "--hash=" in line:
            pins[-1].hashes += 1
        elif pins and line.lstrip().startswith("#"):
            pins[-1].via.append(line.strip().lstrip("#").strip().removeprefix("via").strip())
    return pins


def runtime_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(spec) for spec in project["dependencies"]]


@pytest.fixture(scope="module")
def pins() -> list[Pin]:
    return read_lock((ROOT / "requirements.lock").read_text())


def test_every_runtime_dependency_is_pinned_within_its_range(pins: list[Pin]) -> None:
    """Each pyproject dependency has a pin in the lock that its range allows (else: make lock)."""
    pinned: dict[str, list[Version]] = {}
    for pin in pins:
        pinned.setdefault(pin.name, []).append(pin.version)
    for req in runtime_requirements():
        versions = pinned.get(canonicalize_name(req.name), [])
        assert versions, f"{req.name} is in pyproject.toml but not in requirements.lock: make lock"
        assert any(req.specifier.contains(v, prereleases=True) for v in versions), (
            f"requirements.lock pins {req.name} {versions}, outside {req.specifier}: make lock"
        )


def test_the_lock_pins_nothing_but_the_runtime_dependencies_directly(pins: list[Pin]) -> None:
    """The lock's direct pins are exactly pyproject's runtime dependencies: no dev extras, and
    nothing pyproject dropped."""
    direct = {pin.name for pin in pins if DIRECT in pin.via}
    wanted = {canonicalize_name(req.name) for req in runtime_requirements()}
    assert direct == wanted, f"re-lock with make lock: {sorted(direct ^ wanted)}"


def test_every_pin_carries_a_hash(pins: list[Pin]) -> None:
    """pip install --require-hashes refuses a pin without one."""
    assert pins
    assert [pin.name for pin in pins if pin.hashes == 0] == []


def test_read_lock_finds_direct_pins_in_both_via_forms() -> None:
    """The reader sees `# via X` on one line and `# via` followed by indented names."""
    text = (
        "a==1.0 \\\n    --hash=sha256:00\n    # via sms-outbox (pyproject.toml)\n"
        "b==2.0 ; sys_platform != 'win32' \\\n    --hash=sha256:11 \\\n    --hash=sha256:22\n"
        "    # via\n    #   c\n    #   sms-outbox (pyproject.toml)\n"
        "c==3.0 \\\n    --hash=sha256:33\n    # via a\n"
    )
    found = {p.name: (str(p.version), p.hashes, DIRECT in p.via) for p in read_lock(text)}
    assert found == {"a": ("1.0", 1, True), "b": ("2.0", 2, True), "c": ("3.0", 1, False)}
