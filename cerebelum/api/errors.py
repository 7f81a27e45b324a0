"""The API's one error shape, the id rules its parameters follow, and how both are documented.

Every error answer is a JSON object `{"error": "<one line>", ...fields}`. An id or name outside
the id alphabet (cerebelum.core.ids) is a 422 whose error is the reason, e.g.
`{"error": "execution_id may only contain A-Z a-z 0-9 - _ . : @ ~ = (found '/')", ...}`.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

import asyncpg
import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, WithJsonSchema
from pydantic_core import PydanticCustomError
from starlette.exceptions import HTTPException

from cerebelum.core.ids import MAX_ID_LENGTH, id_problem

log = logging.getLogger(__name__)

INVALID_ID = "invalid_id"  # the validation error type of an id or name outside the alphabet


class OrjsonResponse(JSONResponse):
    """JSON via orjson (FastAPI's ORJSONResponse is deprecated in 0.165 and warns)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS)


def error_response(status_code: int, message: str, **extra: Any) -> OrjsonResponse:
    return OrjsonResponse({"error": message, **extra}, status_code=status_code)


def _id_rule(what: str) -> AfterValidator:
    def check(value: str) -> str:
        problem = id_problem(value, what)
        if problem is not None:
            raise PydanticCustomError(INVALID_ID, "{reason}", {"reason": problem})
        return value

    return AfterValidator(check)


# The id rule as the OpenAPI document states it (cerebelum.core.ids; the check is _id_rule's), so
# clients and generated requests (schemathesis) know what an id looks like.
_ID_SCHEMA = WithJsonSchema({
    "type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH,
    "pattern": f"^[A-Za-z0-9][A-Za-z0-9_.:@~=-]{{0,{MAX_ID_LENGTH - 1}}}$",
})  # fmt: skip

# Types of path parameters and body fields: strings in the id alphabet.
ExecutionId = Annotated[str, _id_rule("execution_id"), _ID_SCHEMA]
WorkflowName = Annotated[str, _id_rule("workflow"), _ID_SCHEMA]
SignalName = Annotated[str, _id_rule("signal"), _ID_SCHEMA]


class ErrorBody(BaseModel):
    """Every error answer: the error in one line, and fields that depend on the error."""

    model_config = ConfigDict(extra="allow")

    error: str


# What each status means, for the OpenAPI document.
STATUS_MEANINGS = {
    400: "The body is not valid JSON.",
    404: "No such execution.",
    409: "Refused: it cannot succeed (see the error).",
    410: "The execution's start was refused by the workers (dead-lettered), so it will never "
    'exist: `code` is "start_refused", with the `reason` and the `dead_letter_id` to read '
    "(GET /dlq/{id}) or replay (POST /dlq/{id}/replay).",
    413: "The command is over the size limit.",
    422: "A parameter or body field of the wrong shape, or an id or name outside the id "
    "alphabet (the error is the reason).",
    503: "Kafka or PostgreSQL cannot be reached; retry.",
}


def documented(*statuses: int, **meanings: str) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: the error shape for each of `statuses`; `meanings` (keyed
    "s404" and so on) replace the generic descriptions where a route means more."""
    return {
        status: {
            "model": ErrorBody,
            "description": meanings.get(f"s{status}", STATUS_MEANINGS[status]),
        }
        for status in statuses
    }


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> OrjsonResponse:
        errors = [_describe(e) for e in exc.errors()]
        if any(e["type"] == "json_invalid" for e in errors):
            return error_response(400, "request body is not valid JSON", detail=errors)
        ids = [e["msg"] for e in errors if e["type"] == INVALID_ID]
        return error_response(422, ids[0] if ids else "invalid request", detail=errors)

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

    async def data_refused(request: Request, exc: Exception) -> OrjsonResponse:
        # A value PostgreSQL cannot take (a character outside UTF-8, out of range): the
        # request's fault, never a 500.
        return error_response(422, f"a parameter PostgreSQL cannot take: {exc}")

    app.add_exception_handler(asyncpg.DataError, data_refused)
    # Errors no handler takes are answered 500 by the entrance (cerebelum.api.guard.Gate),
    # with the security headers.


def _describe(error: Any) -> dict[str, Any]:
    """A validation error without its `input` and `ctx` (which may not be JSON-serialisable)."""
    return {
        "type": error.get("type", "invalid"),
        "loc": [str(part) for part in error.get("loc", ())],
        "msg": error.get("msg", ""),
    }
