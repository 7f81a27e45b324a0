"""W3 as a DBOS Transact workflow: three `@DBOS.step`s, each result checkpointed in PostgreSQL
before the next runs. Imported by the generator process, which is the DBOS application: DBOS is
a library, so the process that starts workflows also runs them (as a DBOS user deploys it)."""

from __future__ import annotations

from typing import Any

from dbos import DBOS


@DBOS.step()
async def step1(inputs: dict[str, Any]) -> dict[str, Any]:
    return {"n": inputs["n"] + 1}


@DBOS.step()
async def step2(step1: dict[str, Any]) -> dict[str, Any]:
    return {"n": step1["n"] * 2}


@DBOS.step()
async def step3(step2: dict[str, Any]) -> dict[str, Any]:
    return step2


@DBOS.workflow()
async def w3(inputs: dict[str, Any]) -> dict[str, Any]:
    return await step3(await step2(await step1(inputs)))
