"""Schedules over HTTP (cerebelum.core.schedules; decisions.md §19):

POST   /schedules                 {"name", "workflow", "inputs"?, "cron" + "timezone"? | "every_s",
                                   "catchup"?, "overlap"?}  → 202 with the next runs   scope start
GET    /schedules                 the live ones (active or paused), with their next runs  read
POST   /schedules/{name}/pause    (and /resume, /trigger) → 202                       scope signal
DELETE /schedules/{name}          → 202 (its runs carry on)                            scope cancel

A schedule is the execution `schedule.<name>` of the built-in workflow cerebelum.schedule: it
is created by a start command, changed by signals, deleted by a cancel, listed from the mirror.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any

import asyncpg
import orjson
from fastapi import FastAPI, Path, Request

from cerebelum.admin.preflight import check_start
from cerebelum.api.errors import OrjsonResponse, WorkflowName, documented, error_response
from cerebelum.api.guard import SCOPE_KEY
from cerebelum.api.tokens import CANCEL, READ, SIGNAL, START
from cerebelum.client import Client
from cerebelum.core.schedules import (
    SCHEDULE_WORKFLOW,
    next_ticks,
    parse_spec,
    schedule_id,
)
from cerebelum.errors import KafkaUnavailable

# app.py's: checks Kafka and the execution, sends, answers 202 (or the refusal).
Command = Callable[[Request, str, Any, dict[str, Any]], Awaitable[OrjsonResponse]]
ScheduleName = Annotated[WorkflowName, Path(description="the schedule's name")]
NEXT_RUNS = 3

LIVE = """
SELECT execution_id, status, inputs, started_at, updated_at
FROM executions
WHERE workflow = $1 AND status IN ('running', 'waiting')
ORDER BY execution_id
LIMIT 1000
"""


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def describe(spec: dict[str, Any], status: str, now_ms: int) -> dict[str, Any]:
    paused = status == "waiting"
    return {
        **spec,
        "execution_id": schedule_id(spec["name"]),
        "state": "paused" if paused else "active",
        "next_runs": [] if paused else [iso(t) for t in next_ticks(spec, now_ms, NEXT_RUNS)],
    }


def add_schedule_routes(app: FastAPI, command: Command, accepted: dict[str, Any]) -> None:
    @app.post(
        "/schedules",
        status_code=202,
        openapi_extra={SCOPE_KEY: START},
        responses={
            202: accepted,
            **documented(
                409,
                422,
                503,
                s409="A live schedule has this " "name, or no live worker runs the workflow.",
            ),
        },  # fmt: skip
    )
    async def create_schedule(body: dict[str, Any], request: Request) -> OrjsonResponse:
        try:
            spec = parse_spec(body)
        except ValueError as exc:
            return error_response(422, str(exc))
        sid = schedule_id(spec["name"])
        pool: asyncpg.Pool = request.app.state.pool
        status = await pool.fetchval("SELECT status FROM executions WHERE execution_id = $1", sid)
        if status in ("running", "waiting"):
            return error_response(409, f"schedule {spec['name']!r} exists ({status})")
        refusal = await check_start(request.app.state.directory, spec["workflow"])
        if refusal is not None:
            return error_response(refusal.status, refusal.message, **refusal.details)
        client: Client = request.app.state.client
        try:
            await client.start(SCHEDULE_WORKFLOW, spec, sid)
        except KafkaUnavailable:
            return error_response(503, "Kafka did not acknowledge the schedule; retry")
        request.app.state.watch.started(sid)
        return OrjsonResponse(describe(spec, "running", _now_ms()), status_code=202)

    @app.get("/schedules", openapi_extra={SCOPE_KEY: READ}, responses=documented(503))
    async def list_schedules(request: Request) -> OrjsonResponse:
        rows = await request.app.state.pool.fetch(LIVE, SCHEDULE_WORKFLOW)
        now = _now_ms()
        out = [describe(_spec(r["inputs"]), r["status"], now) for r in rows]
        return OrjsonResponse({"schedules": out})

    for action in ("pause", "resume", "trigger"):
        _add_signal_route(app, command, accepted, action)

    @app.delete(
        "/schedules/{name}",
        status_code=202,
        openapi_extra={SCOPE_KEY: CANCEL},
        responses={202: accepted, **documented(404, 409, 422, 503)},
    )
    async def delete_schedule(name: ScheduleName, request: Request) -> OrjsonResponse:
        sid = schedule_id(name)
        client: Client = request.app.state.client
        reason = "schedule deleted through the API"
        return await command(request, sid, lambda: client.cancel(sid, reason), {"deleted": name})


def _add_signal_route(
    app: FastAPI, command: Command, accepted: dict[str, Any], action: str
) -> None:
    async def act(name: ScheduleName, request: Request) -> OrjsonResponse:
        sid = schedule_id(name)
        client: Client = request.app.state.client
        return await command(request, sid, lambda: client.signal(sid, action, None), {action: name})

    app.post(
        f"/schedules/{{name}}/{action}",
        status_code=202,
        openapi_extra={SCOPE_KEY: SIGNAL},
        responses={202: accepted, **documented(404, 409, 422, 503)},
        name=f"{action}_schedule",
    )(act)


def _spec(inputs: Any) -> dict[str, Any]:
    return orjson.loads(inputs) if isinstance(inputs, (str, bytes)) else dict(inputs)


def _now_ms() -> int:
    return int(time.time() * 1000)
