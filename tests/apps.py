"""The workflows every test worker runs. All workers of the group must know the same workflows
(a worker that lacks one sends its start-commands to the DLQ), so tests share this one module."""

from __future__ import annotations

import time

from cerebelum import Workflow, step
from examples.order import order  # noqa: F401  (registered by being a module global)


@step
def step1(inputs: dict) -> dict:
    return {"n": inputs["n"] + 1}


@step
def step2(step1: dict) -> dict:
    return {"n": step1["n"] * 2}


@step
def step3(step2: dict) -> dict:
    return step2


w3 = Workflow("w3", step1 >> step2 >> step3)


@step
async def slow_a(inputs: dict) -> dict:
    import asyncio

    await asyncio.sleep(inputs.get("pause", 0.2))
    return {"a": inputs["n"]}


@step
def slow_b(inputs: dict, slow_a: dict) -> dict:
    time.sleep(inputs.get("pause", 0.2))  # a plain step: runs in the thread pool
    return {"b": slow_a["a"] + 1}


@step
async def slow_c(inputs: dict, slow_b: dict) -> dict:
    import asyncio

    await asyncio.sleep(inputs.get("pause", 0.2))
    return {"c": slow_b["b"] * 10}


slow = Workflow("slow", slow_a >> slow_b >> slow_c)
