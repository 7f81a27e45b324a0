"""The engines compared, one module each, behind two small interfaces.

    Engine         harness side: start the engine's services and processes, name the processes
                   whose CPU counts, say how to run the generator against it, stop it all
    EngineClient   generator side (bench/compare/driver.py): run one W3 execution through the
                   engine's own client and return its output once that client sees it complete

W3 everywhere: inputs {"n": i}; step1 returns {"n": i + 1}, step2 doubles it, step3 returns it;
each step's result is durably recorded by the engine before the next step starts.
"""

from __future__ import annotations

import abc
import importlib
from pathlib import Path
from typing import Any

from bench.common.procfs import Tracked

# Engine kind -> module under bench.compare.engines.
MODULES = {"cerebelum": "cerebelum", "restate": "restate", "dbos": "dbos"}


def w3_output(i: int) -> dict[str, int]:
    """What W3 returns for inputs {"n": i} (every engine must return exactly this)."""
    return {"n": (i + 1) * 2}


class Engine(abc.ABC):
    """One engine under test, from nothing running to up and back."""

    kind: str  # cerebelum | restate | dbos
    name: str  # as reported: the kind, or cerebelum@REV for another checkout

    def prepare(self) -> None:  # noqa: B027  (most engines have nothing to keep up)
        """Before the first run: start what stays up between runs (so every engine's run sees
        the same idle services on the box)."""

    @abc.abstractmethod
    def up(self, logs: Path) -> None:
        """Start from a clean state (empty logs and tables) and return once it serves."""

    @abc.abstractmethod
    def tracked(self) -> list[Tracked]:
        """Every process of the engine (servers, workers, databases), not the generator."""

    @abc.abstractmethod
    def driver_argv(self, base: list[str]) -> list[str]:
        """The generator's command line (`base` plus this engine's client configuration),
        wrapped as the engine needs (Restate's runs inside its network namespace)."""

    @abc.abstractmethod
    def down(self) -> None:
        """Stop what `up` started."""

    def close(self) -> None:  # noqa: B027  (most engines keep nothing up between runs)
        """After the last run: stop anything kept up between runs."""

    @abc.abstractmethod
    def describe(self) -> dict[str, Any]:
        """Versions and settings, for the result file."""


class EngineClient(abc.ABC):
    """The engine's own client, as a user would call it, inside the generator process."""

    @abc.abstractmethod
    async def connect(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def execute(self, execution_id: str, i: int) -> Any:
        """Start W3 with inputs {"n": i} under `execution_id`; return its output once the
        client sees the execution complete (raise if it failed)."""


def client_for(kind: str, config: dict[str, Any]) -> EngineClient:
    module = importlib.import_module(f"bench.compare.engines.{MODULES[kind]}")
    client: EngineClient = module.Client(config)
    return client
