"""The app of namespace B in tests/integration/test_namespaces.py: one workflow A's lacks."""

from __future__ import annotations

from cerebelum import Workflow, step


@step
async def greet_b(inputs: dict) -> dict:
    return {"from": "b", "n": inputs["n"]}


only_b = Workflow("only-b", [greet_b])
