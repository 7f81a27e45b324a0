"""The dead letters over HTTP (cerebelum.admin.dead_letters does the work):

GET  /dlq                 newest first, keyset pages (?reason=&execution_id=&after=&before=)
GET  /dlq/{id}            one, with the refused command (JSON when it is JSON)
POST /dlq/{id}/replay     produce the command again, keyed by its execution id (scope admin;
                          409 if replayed before, unless force=true)
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated

from fastapi import FastAPI, Path, Query, Request

from cerebelum.admin import dead_letters as store
from cerebelum.api.errors import ExecutionId, OrjsonResponse, documented, error_response
from cerebelum.api.guard import SCOPE_KEY
from cerebelum.api.tokens import ADMIN, READ
from cerebelum.errors import KafkaUnavailable

log = logging.getLogger(__name__)

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
DeadLetterId = Annotated[str, Path(pattern=r"^\d{1,5}-\d{1,19}$", description="partition-offset")]
_PG_503 = "PostgreSQL cannot be reached; retry."


def add_dead_letter_routes(app: FastAPI) -> None:
    @app.get("/dlq", openapi_extra={SCOPE_KEY: READ}, responses=documented(422, 503, s503=_PG_503))
    async def list_dead_letters(
        request: Request,
        reason: Annotated[str | None, Query(max_length=200, description="a part of it")] = None,
        execution_id: ExecutionId | None = None,
        after: datetime | None = None,
        before: datetime | None = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
        cursor: Annotated[str | None, Query(max_length=200)] = None,
    ) -> OrjsonResponse:
        """Dead letters newest first; `next_cursor` (or null) pages on."""
        query = store.DeadLetterQuery(reason, execution_id, after, before, limit, cursor)
        try:
            return OrjsonResponse(await store.list_dead_letters(request.app.state.pool, query))
        except store.DeadLetterProblem as problem:
            return _refusal(problem)

    @app.get(
        "/dlq/{dead_letter_id}",
        openapi_extra={SCOPE_KEY: READ},
        responses=documented(404, 422, 503, s503=_PG_503),
    )
    async def get_dead_letter(dead_letter_id: DeadLetterId, request: Request) -> OrjsonResponse:
        try:
            return OrjsonResponse(
                await store.get_dead_letter(request.app.state.pool, dead_letter_id)
            )
        except store.DeadLetterProblem as problem:
            return _refusal(problem)

    @app.post(
        "/dlq/{dead_letter_id}/replay",
        status_code=202,
        openapi_extra={SCOPE_KEY: ADMIN},
        responses=documented(
            404, 409, 422, 503,
            s409="Replayed before (pass force=true to send it again), or the command names no "
            "execution to key it by.",
            s503="Kafka or PostgreSQL cannot be reached; retry.",
        ),
    )  # fmt: skip
    async def replay_dead_letter(
        dead_letter_id: DeadLetterId, request: Request, force: bool = False
    ) -> OrjsonResponse:
        """Send the refused command again, keyed by its execution id (its home partition)."""
        caller = str(getattr(request.state, "caller", "anonymous"))
        pool, client = request.app.state.pool, request.app.state.client
        try:
            done = await store.replay(pool, client, dead_letter_id, caller, force)
        except store.DeadLetterProblem as problem:
            return _refusal(problem)
        except KafkaUnavailable as exc:
            log.warning("api: replay of %s: %s", dead_letter_id, exc)
            return error_response(503, "Kafka did not acknowledge the replay; retry",
                                  id=dead_letter_id)  # fmt: skip
        log.info("api: %s replayed dead letter %s (%s)", caller, dead_letter_id,
                 done["execution_id"])  # fmt: skip
        return OrjsonResponse(done, status_code=202)


def _refusal(problem: store.DeadLetterProblem) -> OrjsonResponse:
    return error_response(problem.status, str(problem), **problem.fields)
