"""The HTTP API: start executions (a command to Kafka), read them back (PostgreSQL).

    POST /executions                {"workflow", "inputs"?, "execution_id"?}  → 202
    POST /executions/{id}/signals/{name}   body: the payload (any JSON; empty = null) → 202
    POST /executions/{id}/cancel    {"reason"?}  → 202
    GET  /executions/{id}           the executions row, its partition and owner (worker client id)
    GET  /executions/{id}/events    its events in version order (?after_version=&limit=)
    GET  /executions                newest first (?status=&workflow=&limit=)
    GET  /healthz                   {"status", "kafka", "database"}
    GET  /cluster                   workers, the partitions each owns, lag, live executions

Every error is a JSON object with an "error" message: 400 for a body that is not JSON, 404,
413 for a command over the size limit, 422 for a body or parameter of the wrong shape,
503 when Kafka or PostgreSQL cannot be reached.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import asyncpg
import orjson
from aiokafka.errors import KafkaError
from fastapi import FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from cerebelum.admin.cluster import ClusterInspector, cluster_view
from cerebelum.api import queries
from cerebelum.client import Client, partition_for
from cerebelum.config import Settings
from cerebelum.core.commands import MAX_COMMAND_BYTES, MAX_EXECUTION_ID_LENGTH, start_command
from cerebelum.db import connect_pool

log = logging.getLogger(__name__)

# An HTTP caller waits this long for Kafka to acknowledge a start before getting a 503;
# well under the producer's own 40 s request timeout, which is too long to hold a request.
START_TIMEOUT_S = 10.0
# Health checks must answer fast even when a dependency hangs: a probe times out after ~1 s.
HEALTH_TIMEOUT_S = 1.0
# The cluster view is a handful of admin requests; longer than this, Kafka is not answering.
CLUSTER_TIMEOUT_S = 5.0
# An execution's owner is extra information: without it in ~1 s the row comes with "owner": null.
OWNER_TIMEOUT_S = 1.0
# Workflow names are identifiers; the bound keeps garbage out of logs and the database.
MAX_WORKFLOW_LENGTH = 200
# Lists are bounded so one request cannot read the whole table.
DEFAULT_LIST_LIMIT = 100
MAX_LIST_LIMIT = 1_000
DEFAULT_EVENTS_LIMIT = 1_000
MAX_EVENTS_LIMIT = 10_000


class OrjsonResponse(JSONResponse):
    """JSON via orjson (FastAPI's ORJSONResponse is deprecated in 0.165 and warns)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS)


def error_response(status_code: int, message: str, **extra: Any) -> OrjsonResponse:
    return OrjsonResponse({"error": message, **extra}, status_code=status_code)


class CancelRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    reason: str = Field(default="cancelled through the API", max_length=1_000)


class StartRequest(BaseModel):
    """Body of POST /executions. Unknown fields are refused, so a typo ("input") is not lost."""

    model_config = ConfigDict(extra="forbid", strict=True)

    workflow: str = Field(min_length=1, max_length=MAX_WORKFLOW_LENGTH)
    inputs: dict[str, Any] | None = None
    execution_id: str | None = Field(default=None, min_length=1, max_length=MAX_EXECUTION_ID_LENGTH)


ExecutionId = Annotated[str, Path(min_length=1, max_length=MAX_EXECUTION_ID_LENGTH)]


def create_app(settings: Settings | None = None) -> FastAPI:
    """The API app. The pool and the Kafka client open in its lifespan and close after."""
    settings = settings or Settings.from_env()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Eight connections: queries are short, and more would only queue inside PostgreSQL.
        pool = await connect_pool(settings.database_url, min_size=1, max_size=8)
        client = Client(settings)
        try:
            await client.connect()
        except BaseException:
            await client.close()
            await pool.close()
            raise
        app.state.pool = pool
        app.state.client = client
        app.state.cluster = ClusterInspector(settings)  # connects on first use
        try:
            yield
        finally:
            await app.state.cluster.close()
            await client.close()
            await pool.close()

    app = FastAPI(title="Cerebelum", lifespan=lifespan, default_response_class=OrjsonResponse)
    _install_error_handlers(app)
    _add_routes(app)
    return app


def _add_routes(app: FastAPI) -> None:
    @app.post("/executions", status_code=202)
    async def start_execution(body: StartRequest, request: Request) -> OrjsonResponse:
        client: Client = request.app.state.client
        inputs = {} if body.inputs is None else body.inputs
        # Chosen here, not in the client, so a 503 can name it and a retry stays idempotent.
        execution_id = body.execution_id or uuid.uuid4().hex
        size = len(start_command(execution_id, body.workflow, inputs))
        if size > MAX_COMMAND_BYTES:
            return error_response(
                413, f"command is {size} bytes, over the limit of {MAX_COMMAND_BYTES}"
            )
        try:
            await asyncio.wait_for(
                client.start(body.workflow, inputs, execution_id), START_TIMEOUT_S
            )
        except (KafkaError, TimeoutError) as exc:
            log.warning("api: start of %s not acknowledged: %r", execution_id, exc)
            return error_response(
                503,
                "Kafka did not acknowledge the start command; retry with this execution_id",
                execution_id=execution_id,
            )
        return OrjsonResponse(
            {"execution_id": execution_id, "partition": partition_for(execution_id)},
            status_code=202,
        )

    @app.post("/executions/{execution_id}/signals/{name}", status_code=202)
    async def send_signal(
        execution_id: ExecutionId,
        name: Annotated[str, Path(min_length=1, max_length=200)],
        request: Request,
    ) -> OrjsonResponse:
        raw = await request.body()
        try:
            payload = orjson.loads(raw) if raw.strip() else None
        except orjson.JSONDecodeError:
            return error_response(400, "request body is not valid JSON")
        if len(raw) > MAX_COMMAND_BYTES:
            return error_response(413, f"payload over the limit of {MAX_COMMAND_BYTES} bytes")
        client: Client = request.app.state.client
        return await _produce(
            client.signal(execution_id, name, payload), execution_id, {"signal": name}
        )

    @app.post("/executions/{execution_id}/cancel", status_code=202)
    async def cancel(
        execution_id: ExecutionId, request: Request, body: CancelRequest | None = None
    ) -> OrjsonResponse:
        client: Client = request.app.state.client
        reason = (body or CancelRequest()).reason
        return await _produce(client.cancel(execution_id, reason), execution_id, {"cancel": reason})

    @app.get("/executions/{execution_id}")
    async def get_execution(execution_id: ExecutionId, request: Request) -> OrjsonResponse:
        row = await queries.get_execution(request.app.state.pool, execution_id)
        if row is None:
            return error_response(404, "execution not found", execution_id=execution_id)
        row["partition"] = partition_for(execution_id)
        row["owner"] = await _owner(request.app.state.cluster, row["partition"])
        return OrjsonResponse(row)

    @app.get("/executions/{execution_id}/events")
    async def get_events(
        execution_id: ExecutionId,
        request: Request,
        after_version: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
        limit: Annotated[int, Query(ge=1, le=MAX_EVENTS_LIMIT)] = DEFAULT_EVENTS_LIMIT,
    ) -> OrjsonResponse:
        events = await queries.list_events(
            request.app.state.pool, execution_id, after_version, limit
        )
        if events is None:
            return error_response(404, "execution not found", execution_id=execution_id)
        return OrjsonResponse({"execution_id": execution_id, "events": events})

    @app.get("/executions")
    async def list_executions(
        request: Request,
        status: Annotated[str | None, Query(max_length=100)] = None,
        workflow: Annotated[str | None, Query(max_length=MAX_WORKFLOW_LENGTH)] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIST_LIMIT)] = DEFAULT_LIST_LIMIT,
    ) -> OrjsonResponse:
        rows = await queries.list_executions(request.app.state.pool, status, workflow, limit)
        return OrjsonResponse({"executions": rows})

    @app.get("/healthz")
    async def healthz(request: Request) -> OrjsonResponse:
        database, kafka = await asyncio.gather(
            queries.database_ok(request.app.state.pool, HEALTH_TIMEOUT_S),
            _kafka_ok(request.app.state.client, HEALTH_TIMEOUT_S),
        )
        ok = database and kafka
        return OrjsonResponse(
            {"status": "ok" if ok else "degraded", "kafka": kafka, "database": database},
            status_code=200 if ok else 503,
        )

    @app.get("/cluster")
    async def cluster(request: Request) -> OrjsonResponse:
        inspector: ClusterInspector = request.app.state.cluster
        try:
            view = await asyncio.wait_for(
                cluster_view(inspector.settings, request.app.state.pool, inspector=inspector),
                CLUSTER_TIMEOUT_S,
            )
        except (KafkaError, TimeoutError) as exc:
            log.warning("api: cluster view failed: %r", exc)
            return error_response(503, "Kafka did not answer; retry")
        return OrjsonResponse(view)


async def _owner(inspector: ClusterInspector, partition: int) -> str | None:
    """The client id of the worker owning `partition` now (cached ~1 s), or None."""
    try:
        description = await asyncio.wait_for(inspector.cached_description(), OWNER_TIMEOUT_S)
    except (KafkaError, OSError, TimeoutError) as exc:
        log.info("api: owner unknown, group description failed: %r", exc)
        return None
    return description.owners().get(partition)


async def _produce(send: Any, execution_id: str, accepted: dict[str, Any]) -> OrjsonResponse:
    """Await a command's produce; 202 once Kafka acknowledged it, 503 if it did not."""
    try:
        await asyncio.wait_for(send, START_TIMEOUT_S)
    except (KafkaError, TimeoutError) as exc:
        log.warning("api: command for %s not acknowledged: %r", execution_id, exc)
        return error_response(503, "Kafka did not acknowledge the command; retry")
    return OrjsonResponse(
        {"execution_id": execution_id, "partition": partition_for(execution_id), **accepted},
        status_code=202,
    )


async def _kafka_ok(client: Client, timeout: float) -> bool:
    """True if a broker answers a metadata request within `timeout` seconds."""
    try:
        return await asyncio.wait_for(client.ping(), timeout)
    except (KafkaError, OSError, TimeoutError):
        return False


# --- errors -------------------------------------------------------------------------------------


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> OrjsonResponse:
        errors = [_describe(e) for e in exc.errors()]
        if any(e["type"] == "json_invalid" for e in errors):
            return error_response(400, "request body is not valid JSON", detail=errors)
        return error_response(422, "invalid request", detail=errors)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> OrjsonResponse:
        response = error_response(exc.status_code, str(exc.detail))
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    async def database_unavailable(request: Request, exc: Exception) -> OrjsonResponse:
        log.warning("api: database unavailable: %r", exc)
        return error_response(503, "database unavailable; retry")

    for error in (OSError, TimeoutError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
                  asyncpg.CannotConnectNowError):  # fmt: skip
        app.add_exception_handler(error, database_unavailable)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> OrjsonResponse:
        log.exception("api: unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal error")


def _describe(error: Any) -> dict[str, Any]:
    """A validation error without its `input` and `ctx` (which may not be JSON-serialisable)."""
    return {
        "type": error.get("type", "invalid"),
        "loc": [str(part) for part in error.get("loc", ())],
        "msg": error.get("msg", ""),
    }
