"""What a read answers for an execution that has no row: its start's fate, else not found.

A start Kafka acknowledged can still be refused by the workers (dead-lettered: a workflow no
worker runs, a command over a limit). No execution row ever appears for it, so instead of 404 a
read answers 410 Gone, in the API's one error shape, with what the caller needs:

    {"error": "the start of execution 'x' was refused: <reason>", "code": "start_refused",
     "execution_id": "x", "reason": "<reason>", "dead_letter_id": "<partition>-<offset>",
     "refused_at": "<time>"}

`GET /dlq/{dead_letter_id}` shows the refused command; `POST /dlq/{id}/replay` sends it again.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request

from cerebelum.api.errors import OrjsonResponse, error_response
from cerebelum.api.visibility import MirrorWatch

START_REFUSED = "start_refused"


async def missing_execution(request: Request, execution_id: str) -> OrjsonResponse:
    """410 start_refused if the execution's start was refused, else 404."""
    watch: MirrorWatch = request.app.state.watch
    refusal = await watch.refused_start(execution_id)
    if refusal is None:
        return error_response(404, "execution not found", execution_id=execution_id)
    return start_refused(execution_id, refusal)


def start_refused(execution_id: str, refusal: dict[str, Any]) -> OrjsonResponse:
    return error_response(
        410,
        f"the start of execution {execution_id!r} was refused: {refusal['reason']}",
        code=START_REFUSED,
        execution_id=execution_id,
        reason=refusal["reason"],
        dead_letter_id=refusal["dead_letter_id"],
        refused_at=refusal["at"],
    )
