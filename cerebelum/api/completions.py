"""External completion over HTTP: a step that returned ctx.pending() handed out a token; the
system that did the work completes the step with it.

POST /completions   {"token", "result"?} or {"token", "error": {"type", "message"?}}  → 202
                                                                             scope signal
The command goes to the execution's home partition like a signal; the worker records it once
and refuses (dead-letters) a second completion or one for an earlier run. 404/409 as for a
signal: an execution that does not exist, or that has ended.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from pydantic import BaseModel, ConfigDict, Field

from cerebelum.api.errors import OrjsonResponse, documented, error_response
from cerebelum.api.guard import SCOPE_KEY
from cerebelum.api.tokens import SIGNAL
from cerebelum.client import Client
from cerebelum.core.commands import parse_completion_token

# app.py's: checks Kafka and the execution, sends, answers 202 (or the refusal).
Command = Callable[[Request, str, Any, dict[str, Any]], Awaitable[OrjsonResponse]]


class CompletionError(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    type: str = Field(min_length=1, max_length=200, description="the error's type (diverge rules)")
    message: str = Field(default="", max_length=2_000)


class CompletionRequest(BaseModel):
    """Body of POST /completions: the token, and a result or an error (not both)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    token: str = Field(
        max_length=600, description="ctx.completion_token of the pending run: execution/step/n"
    )
    result: Any = None
    error: CompletionError | None = None


def add_completion_routes(app: FastAPI, command: Command, accepted: dict[str, Any]) -> None:
    @app.post(
        "/completions",
        status_code=202,
        openapi_extra={SCOPE_KEY: SIGNAL},
        responses={
            202: accepted,
            **documented(
                400, 404, 409, 413, 422, 503,
                s404="PostgreSQL has no such execution and the mirror has caught up on its "
                "partition.",
                s409="The execution has ended (the body has its status).",
                s422="The body's shape, a token that is not execution/step/number, or both "
                "a result and an error.",
            ),
        },
    )  # fmt: skip
    async def complete(body: CompletionRequest, request: Request) -> OrjsonResponse:
        try:
            execution_id, step, _ = parse_completion_token(body.token)
        except ValueError as exc:
            return error_response(422, str(exc))
        if body.error is not None and "result" in body.model_fields_set:
            return error_response(422, "give a result or an error, not both")
        client: Client = request.app.state.client
        error = body.error.model_dump() if body.error is not None else None
        return await command(
            request, execution_id,
            lambda: client.complete(body.token, body.result, error=error),
            {"completion": step, "outcome": "error" if error else "result"},
        )  # fmt: skip
