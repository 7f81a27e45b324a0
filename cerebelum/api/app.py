"""The HTTP API: start executions (a command to Kafka), read them back (PostgreSQL).

    POST /executions                {"workflow", "inputs"?, "execution_id"?}  → 202    scope start
    POST /executions/{id}/signals/{name}   body: the payload (any JSON; empty = null) → 202
                                                                                    scope signal
    POST /executions/{id}/cancel    {"reason"?}  → 202                               scope cancel
    POST /completions               {"token", "result" | "error"}: complete a step that
                                    returned ctx.pending() (cerebelum.api.completions)  signal
    /schedules                      create, list, pause, resume, trigger, delete
                                    schedules (cerebelum.api.schedules)
    GET  /executions/{id}           the executions row, partition, owner, step table  scope read
                                    (410 start_refused if its start was dead-lettered)
    GET  /executions/{id}/events    its events in version order (?after_version=&limit=)  read
    GET  /executions                filtered, newest first, keyset pages (?cursor=)  scope read
    GET  /executions/{id}/state     the state at ?version=N, or ?diff=A..B           scope read
    GET  /dlq, /dlq/{id}            dead letters, newest first; one                  scope read
    POST /dlq/{id}/replay           produce a dead letter's command again            scope admin
    GET  /                          the dashboard (its page and /ui/ assets need no token;   public
                                    everything it shows comes from the routes here)
    GET  /cluster                   workers, the partitions each owns, lag, live     scope admin
    GET  /healthz                   {"status", "kafka", "database", "namespace"}        public
    GET  /readyz                    {"ready", "kafka", "database"}: can take commands   public
    GET  /metrics                   Prometheus metrics (requests by route and status)   scope read

Every request first passes the entrance (cerebelum.api.guard): the Host must be allowed; a
bearer token with the route's scope is needed (one of the tokens file's, or a JWT from the
configured OpenID Connect provider; admin has every scope; /healthz and /readyz are open); a
POST must be `Content-Type: application/json` with a body that is JSON within the limits of
cerebelum.api.bodies. Authentication is on unless CEREBELUM_API_AUTH=off; with it on, the app
refuses to be made without a tokens file or a JWKS (cerebelum.api.tokens).

Every error is one JSON object, {"error": "<one line>", ...fields}: 400 for a body that is not
JSON or a Host not allowed; 401 for a missing or unknown token; 403 for a token without the
route's scope; 404 for an execution that does not exist (a signal or cancel gets it only once
the mirror has caught up on the execution's partition); 410 `start_refused` for a read of an
execution whose start the workers refused (dead-lettered; cerebelum.api.fate), and for a
`POST /executions?wait=` whose start they refused meanwhile; 409 for a start naming a workflow no
live worker runs, or a signal or cancel for an execution that has ended; 413 for a body or
command over the size limit; 415 for a POST that is not application/json; 422 for a body or
parameter of the wrong shape, JSON nested too deep or an integer beyond 64 bits, or an id or
name outside the id alphabet (the error is the reason); 503 when Kafka or PostgreSQL cannot be
reached. Every route's statuses are in the OpenAPI document (/openapi.json, /docs, /redoc:
public, from the package's files).

The API starts without Kafka: it answers /healthz and /readyz 503 and commands 503 while it
connects in the background, retrying with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

import orjson
from aiokafka.errors import KafkaError
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.middleware.cors import CORSMiddleware
from pydantic import BaseModel, ConfigDict, Field

from cerebelum.admin.cluster import ClusterInspector, cluster_view
from cerebelum.admin.preflight import PartitionProbe, Refusal, check_start, check_target
from cerebelum.admin.workflows import WorkflowDirectory
from cerebelum.api import dashboard, queries
from cerebelum.api.completions import add_completion_routes
from cerebelum.api.dead_letters import add_dead_letter_routes
from cerebelum.api.errors import (
    ExecutionId,
    OrjsonResponse,
    SignalName,
    WorkflowName,
    documented,
    error_response,
    install_error_handlers,
)
from cerebelum.api.fate import missing_execution, start_refused
from cerebelum.api.guard import SCOPE_KEY, Gate, Guard, document_entrance
from cerebelum.api.links import document_links
from cerebelum.api.reads import add_read_routes
from cerebelum.api.schedules import add_schedule_routes
from cerebelum.api.steps import queued_on, step_table
from cerebelum.api.telemetry import add_metrics
from cerebelum.api.tokens import (
    ADMIN,
    CANCEL,
    READ,
    SIGNAL,
    START,
    Authenticator,
    load_authenticator,
)
from cerebelum.api.visibility import (
    MAX_WAIT_S,
    UNTIL,
    VISIBILITY_WAIT_S,
    VISIBLE,
    MirrorWatch,
    TooManyWaiters,
)
from cerebelum.client import Client, partition_for
from cerebelum.config import ApiSettings, Settings
from cerebelum.core import events as ev
from cerebelum.core.commands import MAX_COMMAND_BYTES, parse_traceparent, start_command
from cerebelum.core.ids import reserved_id_problem
from cerebelum.core.state import QUEUED
from cerebelum.db import connect_pool
from cerebelum.errors import KafkaUnavailable
from cerebelum.security.redact import redact

log = logging.getLogger(__name__)

# An HTTP caller waits this long for Kafka to acknowledge a command before getting a 503;
# well under the producer's default 40 s request timeout, which is too long to hold a request.
START_TIMEOUT_S = 10.0
# Health checks must answer fast even when a dependency hangs: a probe times out after ~1 s.
HEALTH_TIMEOUT_S = 1.0
# The cluster view is a handful of admin requests; longer than this, Kafka is not answering.
CLUSTER_TIMEOUT_S = 5.0
# An execution's owner is extra information: without it in ~1 s the row comes with "owner": null.
OWNER_TIMEOUT_S = 1.0
# While Kafka is away at start-up the producer reconnects after half a second, doubling up to
# ten: quick to notice a broker that is back, cheap while it stays away.
CONNECT_RETRY_FIRST_S = 0.5
CONNECT_RETRY_MAX_S = 10.0
# Event pages are bounded so one request cannot read a whole long history.
DEFAULT_EVENTS_LIMIT = 1_000
MAX_EVENTS_LIMIT = 10_000


Until = Literal[UNTIL]  # type: ignore[valid-type]
_UNTIL = "visible (mirrored), terminal (completed, failed or cancelled), or a status"
_WAIT = "wait up to this many seconds for the mirror to have the execution as `until` says"


class CancelRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    reason: str = Field(default="cancelled through the API", max_length=1_000)


class StartRequest(BaseModel):
    """Body of POST /executions. Unknown fields are refused, so a typo ("input") is not lost."""

    model_config = ConfigDict(extra="forbid", strict=True)

    workflow: WorkflowName
    inputs: dict[str, Any] | None = None
    execution_id: ExecutionId | None = None


def create_app(settings: Settings | None = None, api: ApiSettings | None = None) -> FastAPI:
    """The API app. Its lifespan opens the pool, starts connecting to Kafka in the background
    (the API serves while Kafka is away) and closes everything after.

    Raises ConfigurationError, before anything starts, when `api` (default: from the
    environment) turns authentication on without a usable tokens file.
    """
    settings = settings or Settings.from_env()
    api = api or ApiSettings.from_env()
    authenticator = load_authenticator(api)
    if authenticator is None:
        log.warning("api: authentication is OFF (CEREBELUM_API_AUTH=off): anyone who reaches "
                    "the API may start, signal and cancel executions")  # fmt: skip

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Eight connections: queries are short, and more would only queue inside PostgreSQL.
        pool = await connect_pool(settings.namespace_database_url, min_size=1, max_size=8)
        client = Client(settings, timeout=START_TIMEOUT_S)
        inspector = ClusterInspector(settings)  # connects on first use
        directory = WorkflowDirectory(settings, inspector)
        probe = PartitionProbe(settings, inspector)
        app.state.pool, app.state.client, app.state.cluster = pool, client, inspector
        app.state.directory, app.state.probe = directory, probe
        app.state.watch = watch = MirrorWatch(
            settings.namespace_database_url, pool, settings.names.mirrored_channel
        )
        loop = asyncio.get_running_loop()
        app.state.first_connect = asyncio.Event()
        background = [
            loop.create_task(_connect(client, app.state.first_connect)),
            loop.create_task(directory.run()),
            loop.create_task(watch.run()),
        ]
        try:
            yield
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await directory.close()
            await probe.close()
            await inspector.close()
            await client.close()
            await pool.close()

    app = FastAPI(
        title="Cerebelum", lifespan=lifespan, default_response_class=OrjsonResponse,
        docs_url=None, redoc_url=None,  # served from vendored files: cerebelum.api.dashboard
        description=f"Namespace **{settings.namespace}**: this API starts, reads and signals the "
        "executions of this namespace only (its topics and its PostgreSQL schema).",
    )  # fmt: skip
    app.state.namespace = settings.namespace
    install_error_handlers(app)
    app.state.metrics = add_metrics(app)
    add_read_routes(app)  # first: /executions/counts before /executions/{execution_id}
    _add_routes(app)
    add_dead_letter_routes(app)
    add_completion_routes(app, _command, _ACCEPTED)
    add_schedule_routes(app, _command, _ACCEPTED)
    dashboard.add_dashboard(app)
    _add_entrance(app, api, authenticator)
    return app


def _add_entrance(app: FastAPI, api: ApiSettings, authenticator: Authenticator | None) -> None:
    """The guard and gate of cerebelum.api.guard around the routes, CORS between them when
    CEREBELUM_API_CORS_ORIGINS names origins, and their statuses in the OpenAPI document.
    (Starlette runs the middleware added last first.)"""
    app.add_middleware(Guard, router=app.router, authenticator=authenticator, docs_paths=(),
                       public=dashboard.PUBLIC_PATHS)  # fmt: skip
    if api.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(api.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
            # Tokens travel in a header a page sets itself: no cookies, so no credentials.
            allow_credentials=False,
            # A browser may reuse a preflight's answer for ten minutes.
            max_age=600,
        )
    app.add_middleware(Gate, allowed_hosts=api.allowed_hosts, docs_paths=dashboard.DOCS_PAGES,
                       pages=dict.fromkeys(dashboard.PAGE_PATHS, dashboard.CSP))  # fmt: skip
    plain_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document_links(document_entrance(plain_openapi()))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


async def _connect(client: Client, first_attempt: asyncio.Event) -> None:
    """Connect the API's producer, retrying with backoff while Kafka is away. `first_attempt`
    is set once the first try has ended, either way."""
    delay = CONNECT_RETRY_FIRST_S
    while True:
        try:
            await client.connect()
            log.info("api: connected to Kafka at %s", redact(client.settings.kafka_bootstrap))
            return
        except KafkaUnavailable as exc:
            log.warning("api: %s; retrying in %.1f s", exc, delay)
        finally:
            first_attempt.set()
        await asyncio.sleep(delay)
        delay = min(delay * 2, CONNECT_RETRY_MAX_S)


async def _kafka_ready(request: Request) -> bool:
    """Whether the API's producer is connected. A command that arrives while the first
    connection is still being made waits for it (bounded), rather than fail at start-up."""
    client: Client = request.app.state.client
    if not client.connected and not request.app.state.first_connect.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(request.app.state.first_connect.wait(), START_TIMEOUT_S)
    return client.connected


# The statuses of the command routes, documented in the OpenAPI.
_COMMAND_503 = "Kafka cannot be reached or did not acknowledge the command in time; retry."
_ACCEPTED = {"description": "Kafka acknowledged the command: it will be run."}


def _add_routes(app: FastAPI) -> None:
    @app.post(
        "/executions",
        status_code=202,
        openapi_extra={SCOPE_KEY: START},
        responses={
            202: _ACCEPTED,
            **documented(
                400, 409, 410, 413, 422, 503,
                s409="No live worker runs the workflow (the body lists the workflows that "
                "live workers run). With no live worker at all a start is accepted: it waits "
                "for the first worker.",
                s410="With `wait`: Kafka took the start, but the workers refused it "
                '(dead-lettered) before the wait ended: `code` "start_refused", the `reason`, '
                "the `dead_letter_id` (GET /dlq/{id}; POST /dlq/{id}/replay sends it again).",
                s503=_COMMAND_503 + " The body names the execution_id to retry with.",
            ),
        },
    )  # fmt: skip
    async def start_execution(
        body: StartRequest,
        request: Request,
        wait: Annotated[float | None, Query(gt=0, le=MAX_WAIT_S, description=_WAIT)] = None,
        until: Annotated[Until, Query(description=_UNTIL)] = VISIBLE,
    ) -> OrjsonResponse:
        client: Client = request.app.state.client
        inputs = {} if body.inputs is None else body.inputs
        # Chosen here, not in the client, so a 503 can name it and a retry stays idempotent.
        execution_id = body.execution_id or uuid.uuid4().hex
        if (reserved := reserved_id_problem(execution_id, body.workflow)) is not None:
            return error_response(422, reserved)
        # The caller's W3C trace context, if valid (an invalid one is dropped, as W3C asks):
        # the execution's spans join the caller's trace.
        traceparent = parse_traceparent(request.headers.get("traceparent"))
        size = len(start_command(execution_id, body.workflow, inputs, traceparent))
        if size > MAX_COMMAND_BYTES:
            return error_response(
                413, f"command is {size} bytes, over the limit of {MAX_COMMAND_BYTES}"
            )
        if not await _kafka_ready(request):
            return _kafka_away(execution_id=execution_id)
        refusal = await check_start(request.app.state.directory, body.workflow)
        if refusal is not None:
            return _refused(refusal)
        try:
            await client.start(body.workflow, inputs, execution_id, traceparent)
            log.info("api: %s started %s (%s)", _caller(request), execution_id, body.workflow)
        except KafkaUnavailable as exc:
            log.warning("api: %s", exc)
            return error_response(
                503,
                "Kafka did not acknowledge the start command; retry with this execution_id",
                execution_id=execution_id,
            )
        request.app.state.watch.started(execution_id)
        answer: dict[str, Any] = {
            "execution_id": execution_id,
            "partition": partition_for(execution_id),
        }
        if wait is not None:
            met = await _wait(request, execution_id, until, wait)
            pool = request.app.state.pool
            answer["until"] = {"condition": until, "met": met}
            answer["execution"] = await queries.get_execution(pool, execution_id)
            if answer["execution"] is None:  # not there yet, or never: its start was refused
                refused = await request.app.state.watch.refused_start(execution_id)
                if refused is not None:
                    return start_refused(execution_id, refused)
        return OrjsonResponse(answer, status_code=202)

    @app.post(
        "/executions/{execution_id}/signals/{name}",
        status_code=202,
        # The body is read raw (any JSON, or nothing), so FastAPI cannot document it itself.
        openapi_extra={SCOPE_KEY: SIGNAL, "requestBody": {"required": False, "content": {
            "application/json": {"schema": {"description": "The signal's payload: any JSON "
                                                           "(an empty body is null)."}}}}},
        responses={
            202: _ACCEPTED,
            **documented(
                400, 404, 409, 413, 422, 503,
                s404="PostgreSQL has no such execution and the mirror has caught up on its "
                "partition. (Before it has, the signal is accepted: the execution may have "
                "been started a moment ago.)",
                s409="The execution has ended (the body has its status).",
                s503=_COMMAND_503,
            ),
        },
    )  # fmt: skip
    async def send_signal(
        execution_id: ExecutionId, name: SignalName, request: Request
    ) -> OrjsonResponse:
        raw = await request.body()
        try:
            payload = orjson.loads(raw) if raw.strip() else None
        except orjson.JSONDecodeError:
            return error_response(400, "request body is not valid JSON")
        if len(raw) > MAX_COMMAND_BYTES:
            return error_response(413, f"payload over the limit of {MAX_COMMAND_BYTES} bytes")
        client: Client = request.app.state.client
        return await _command(
            request, execution_id, lambda: client.signal(execution_id, name, payload),
            {"signal": name},
        )  # fmt: skip

    @app.post(
        "/executions/{execution_id}/cancel",
        status_code=202,
        openapi_extra={SCOPE_KEY: CANCEL},
        responses={
            202: _ACCEPTED,
            **documented(
                400, 404, 409, 422, 503,
                s404="PostgreSQL has no such execution and the mirror has caught up on its "
                "partition. (Before it has, the cancel is accepted.)",
                s409="The execution has ended (the body has its status).",
                s503=_COMMAND_503,
            ),
        },
    )  # fmt: skip
    async def cancel(
        execution_id: ExecutionId, request: Request, body: CancelRequest | None = None
    ) -> OrjsonResponse:
        client: Client = request.app.state.client
        reason = (body or CancelRequest()).reason
        return await _command(
            request, execution_id, lambda: client.cancel(execution_id, reason), {"cancel": reason}
        )

    @app.get(
        "/executions/{execution_id}",
        openapi_extra={SCOPE_KEY: READ},
        responses=documented(
            404, 410, 422, 503,
            s404="No such execution (a start this API acknowledged a moment ago is waited for, "
            "up to 5 s, before this answer).",
            s503="PostgreSQL cannot be reached; retry.",
        ),
    )  # fmt: skip
    async def get_execution(
        execution_id: ExecutionId,
        request: Request,
        until: Annotated[Until | None, Query(description=_UNTIL)] = None,
        timeout: Annotated[float, Query(gt=0, le=MAX_WAIT_S)] = 10.0,
    ) -> OrjsonResponse:
        """The execution as mirrored, with its step table. With `until`, answers once the
        mirror has it so (or after `timeout` s, `"until": {"met": false}`). A start this API
        acknowledged and the mirror has not written yet is waited for (up to 5 s), not 404; a
        start the workers refused answers 410 `start_refused` (at once once the dead letter is
        mirrored), naming the dead letter."""
        watch: MirrorWatch = request.app.state.watch
        met = None
        if until is not None:
            met = await _wait(request, execution_id, until, timeout)
        elif watch.recently_started(execution_id):
            await _wait(request, execution_id, VISIBLE, VISIBILITY_WAIT_S)
        row = await queries.get_execution(request.app.state.pool, execution_id)
        if row is None:
            return await missing_execution(request, execution_id)
        if until is not None:
            row["until"] = {"condition": until, "met": met}
        row["partition"] = partition_for(execution_id)
        row["owner"] = await _owner(request.app.state.cluster, row["partition"])
        events = await queries.list_events(request.app.state.pool, execution_id, 0,
                                           MAX_EVENTS_LIMIT) or []  # fmt: skip
        row["steps"] = step_table(e["data"] for e in events)
        row["steps_complete"] = len(events) < MAX_EVENTS_LIMIT  # else: from the first events
        # A child execution names its parent node; a parent's child nodes list their children.
        first = events[0]["data"] if events else {}
        row["parent"] = first.get("parent") if first.get("type") == ev.EXECUTION_STARTED else None
        row["queued"] = queued_on(e["data"] for e in events) if row["status"] == QUEUED else None
        return OrjsonResponse(row)

    @app.get(
        "/executions/{execution_id}/events",
        openapi_extra={SCOPE_KEY: READ},
        responses=documented(404, 410, 422, 503, s503="PostgreSQL cannot be reached; retry."),
    )
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
            return await missing_execution(request, execution_id)
        return OrjsonResponse({"execution_id": execution_id, "events": events})

    @app.get(
        "/healthz",
        responses={
            200: {
                "description": '{"status": "ok", "kafka": true, "database": true, '
                '"namespace": "default"}'
            },
            503: {
                "description": 'Kafka or PostgreSQL is away: {"status": "degraded", "kafka": '
                'false, "database": true, "namespace": "default"} (the API keeps serving and '
                "reconnecting)."
            },
        },
    )
    async def healthz(request: Request) -> OrjsonResponse:
        database, kafka = await asyncio.gather(
            queries.database_ok(request.app.state.pool, HEALTH_TIMEOUT_S),
            _kafka_ok(request.app.state.client, HEALTH_TIMEOUT_S),
        )
        ok = database and kafka
        return OrjsonResponse(
            {
                "status": "ok" if ok else "degraded",
                "kafka": kafka,
                "database": database,
                "namespace": request.app.state.namespace,
            },
            status_code=200 if ok else 503,
        )

    @app.get(
        "/readyz",
        responses={
            200: {"description": '{"ready": true, "kafka": true, "database": true}'},
            503: {
                "description": 'Not ready to take commands: {"ready": false, "kafka": false, '
                '"database": true} (the producer is not connected, or PostgreSQL does not '
                "answer)."
            },
        },
    )
    async def readyz(request: Request) -> OrjsonResponse:
        """Ready: the API's producer is connected to Kafka and PostgreSQL answers, so a
        command or a query can succeed now. (/healthz asks a broker afresh instead.)"""
        client: Client = request.app.state.client
        database = await queries.database_ok(request.app.state.pool, HEALTH_TIMEOUT_S)
        ready = database and client.connected
        return OrjsonResponse(
            {"ready": ready, "kafka": client.connected, "database": database},
            status_code=200 if ready else 503,
        )

    @app.get(
        "/cluster",
        openapi_extra={SCOPE_KEY: ADMIN},
        responses=documented(503, s503="Kafka did not answer; retry."),
    )
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


async def _command(
    request: Request, execution_id: str, send: Any, accepted: dict[str, Any]
) -> OrjsonResponse:
    """A signal or cancel: refused if it cannot succeed, else 202 once Kafka acknowledged it."""
    if not await _kafka_ready(request):
        return _kafka_away()
    refusal = await check_target(request.app.state.pool, request.app.state.probe, execution_id)
    if refusal is not None:
        return _refused(refusal)
    try:
        await send()
        log.info("api: %s sent %s to %s", _caller(request), accepted, execution_id)
    except KafkaUnavailable as exc:
        log.warning("api: %s", exc)
        return error_response(503, "Kafka did not acknowledge the command; retry")
    return OrjsonResponse(
        {"execution_id": execution_id, "partition": partition_for(execution_id), **accepted},
        status_code=202,
    )


async def _wait(request: Request, execution_id: str, until: str, timeout: float) -> bool:
    watch: MirrorWatch = request.app.state.watch
    try:
        return await watch.wait(execution_id, until, timeout)
    except TooManyWaiters as exc:
        raise HTTPException(503, f"{exc}; retry", headers={"retry-after": "1"}) from None


def _caller(request: Request) -> str:
    """Who sent the request, for the log: its token's name (or JWT's subject)."""
    return str(getattr(request.state, "caller", "anyone (authentication off)"))


def _refused(refusal: Refusal) -> OrjsonResponse:
    return error_response(refusal.status, refusal.message, **refusal.details)


def _kafka_away(**extra: Any) -> OrjsonResponse:
    return error_response(503, "Kafka unavailable (the API is reconnecting); retry", **extra)


async def _kafka_ok(client: Client, timeout: float) -> bool:
    """True if a broker answers a metadata request within `timeout` seconds."""
    try:
        return await asyncio.wait_for(client.ping(), timeout)
    except (KafkaError, OSError, TimeoutError):
        return False
