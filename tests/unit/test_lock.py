"""requirements.lock (the image's transitive dependencies, hash-locked) agrees with pyproject.toml.

The Dockerfile installs the lock with `--require-hashes`, then the wheel with `--no-deps`: a pin
changed in pyproject.toml but not in the lock would ship the old version silently. Refresh the
lock with `bash scripts/lock.sh`.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements.lock"
# The extras the image carries beside the dependencies (scripts/lock.sh: --extra oidc --extra
# tracing), so a team with an identity provider or a trace collector needs no other image.
IMAGE_EXTRAS = ("oidc", "tracing")

PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;\\]+)")


def normalize(name: str) -> str:
    """A project name as PyPI compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned(requirements: list[str]) -> dict[str, str]:
    pins = {}
    for requirement in requirements:
        match = PIN.match(requirement)
        assert match, f"{requirement!r} is not pinned with =="
        pins[normalize(match.group(1))] = match.group(3)
    return pins


def image_requirements() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    return list(project["dependencies"]) + [r for extra in IMAGE_EXTRAS for r in extras[extra]]


def locked(text: str | None = None) -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) of every package in the lock (or in `text`)."""
    entries: dict[str, tuple[str, list[str]]] = {}
    current: str | None = None
    for line in (LOCK.read_text() if text is None else text).splitlines():
        match = PIN.match(line)
        if match:
            current = normalize(match.group(1))
            entries[current] = (match.group(3), [])
        elif current and line.strip().startswith("--hash=sha256:"):
            entries[current][1].append(line.strip().split(":", 1)[1].rstrip(" \\"))
        elif not line.startswith(" "):
            current = None
    return entries


def disagreements(lock: dict[str, tuple[str, list[str]]]) -> dict[str, tuple[str, str]]:
    """name -> (pyproject's pin, the lock's) where they differ."""
    wanted = pinned(image_requirements())
    found = {name: lock.get(name, ("missing", []))[0] for name in wanted}
    return {name: (wanted[name], found[name]) for name in wanted if wanted[name] != found[name]}


def test_the_lock_pins_every_dependency_as_pyproject_does() -> None:
    assert disagreements(locked()) == {}


def test_every_locked_package_is_pinned_with_hashes() -> None:
    lock = locked()
    assert len(lock) > len(image_requirements())  # the transitive ones are there too
    for name, (version, hashes) in lock.items():
        assert hashes, f"{name}=={version} has no hash: --require-hashes would refuse the lock"
        assert all(re.fullmatch(r"[0-9a-f]{64}", digest) for digest in hashes), name


def test_the_lock_says_how_it_was_made() -> None:
    assert "bash scripts/lock.sh" in LOCK.read_text()
    assert "--generate-hashes" in (ROOT / "scripts" / "lock.sh").read_text()


def test_a_lock_behind_pyproject_is_caught() -> None:
    text = LOCK.read_text()
    fastapi = pinned(image_requirements())["fastapi"]
    behind = text.replace(f"fastapi=={fastapi} ", "fastapi==0.1.0 ")
    assert behind != text
    assert disagreements(locked(behind)) == {"fastapi": (fastapi, "0.1.0")}
    without = re.sub(r"(?m)^asyncpg==.*(\n +.*)*\n", "", text)
    assert "asyncpg" in disagreements(locked(without))
