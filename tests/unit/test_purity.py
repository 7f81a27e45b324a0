"""The core is pure: no asyncio, Kafka, asyncpg or HTTP imports anywhere under cerebelum.core."""

from __future__ import annotations

import ast
from pathlib import Path

import cerebelum.core

FORBIDDEN = {"asyncio", "aiokafka", "asyncpg", "fastapi", "uvicorn", "httpx", "socket", "kafka"}


def test_core_imports_no_io() -> None:
    core = Path(cerebelum.core.__file__).parent
    offenders = []
    for path in core.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert offenders == []
