"""The app of namespace A in tests/integration/test_namespaces.py: one workflow B's lacks."""

from __future__ import annotations

from cerebelum import Workflow, step


@step
async def greet_a(inputs: dict) -> dict:
    return {"from": "a", "n": inputs["n"]}


only_a = Workflow("only-a", [greet_a])
