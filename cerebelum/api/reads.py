"""The API's list and time-travel reads (PostgreSQL):

GET /executions                 filtered, newest first, keyset pages (cerebelum.api.listing)
GET /executions/{id}/state      ?version=N: the state after event N (default: the latest);
                                ?diff=A..B: what changed from version A to version B
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request

from cerebelum.admin.workflows import WorkflowDirectory, version_rows
from cerebelum.api import listing, queries
from cerebelum.api.errors import ExecutionId, OrjsonResponse, documented, error_response
from cerebelum.api.fate import missing_execution
from cerebelum.api.guard import SCOPE_KEY
from cerebelum.api.timetravel import diff, states_at
from cerebelum.api.tokens import READ
from cerebelum.core.state import STATUSES

# A list filter is compared, never stored; the bound keeps garbage out of the query.
MAX_FILTER_LENGTH = 200
DEFAULT_LIST_LIMIT = 100
MAX_LIST_LIMIT = 1_000
MAX_STATUSES = 16
# Time travel folds the history from its start: longer histories are refused, not slow.
MAX_FOLD_EVENTS = 100_000
_DIFF = re.compile(r"^(\d{1,9})\.\.(\d{1,9})$")
_PG_503 = "PostgreSQL cannot be reached; retry."
# The statuses an execution has (blocked: waiting for a worker with its version, §6).
_STATUSES = ", ".join([*STATUSES, "retrying"])


def add_read_routes(app: FastAPI) -> None:
    @app.get(
        "/workflows",
        openapi_extra={SCOPE_KEY: READ},
        responses=documented(503, s503="Kafka or PostgreSQL cannot be reached; retry."),
    )
    async def workflows(request: Request) -> OrjsonResponse:
        """The workflows the live workers run: each version newest first, the workers that run
        it, its live executions (blocked ones included) and blocked ones, and its graph
        (steps, parallel groups, waits, rules); then the versions no live worker runs that
        still have live executions (blocked until a worker with that version comes)."""
        directory: WorkflowDirectory = request.app.state.directory
        live = await directory.live_workflows()
        counts = await queries.live_and_blocked_by_version(request.app.state.pool)
        body = {
            "complete": live.complete,
            "live_workers": list(live.live_workers),
            "unpublished_workers": list(live.unpublished),
            "workflows": [
                {"name": name, "versions": versions}
                for name, versions in version_rows(live, counts).items()
            ],
        }  # fmt: skip
        return OrjsonResponse(body)

    @app.get(
        "/executions",
        openapi_extra={SCOPE_KEY: READ},
        responses=documented(422, 503, s503=_PG_503),
    )
    async def list_executions(
        request: Request,
        workflow: Annotated[str | None, Query(max_length=MAX_FILTER_LENGTH)] = None,
        status: Annotated[
            list[str] | None,
            Query(max_length=MAX_STATUSES, description="any of these: " + _STATUSES),
        ] = None,
        id_prefix: Annotated[str | None, Query(max_length=MAX_FILTER_LENGTH)] = None,
        started_after: datetime | None = None,
        started_before: datetime | None = None,
        updated_after: datetime | None = None,
        updated_before: datetime | None = None,
        sort: Annotated[str, Query(pattern="^(started|updated)$")] = "started",
        limit: Annotated[int, Query(ge=1, le=MAX_LIST_LIMIT)] = DEFAULT_LIST_LIMIT,
        cursor: Annotated[str | None, Query(max_length=1_000)] = None,
    ) -> OrjsonResponse:
        """Executions newest first (by `sort`), a page at a time: pass the response's
        `next_cursor` as `cursor` for the next page (null: no more). Also filters
        `input.<path>=<value>` and `output.<path>=<value>` (JSON containment, e.g.
        `?input.customer=c-42`). Unknown parameters are refused (422)."""
        params = list(request.query_params.multi_items())
        unknown = listing.unknown_parameters([name for name, _ in params])
        if unknown:
            known = [*sorted(listing.PLAIN_PARAMETERS), "input.*", "output.*"]
            message = f"unknown query parameters: {', '.join(unknown)}"
            return error_response(422, message, known=known)
        if status is not None and any(len(s) > MAX_FILTER_LENGTH for s in status):
            return error_response(422, f"a status is at most {MAX_FILTER_LENGTH} characters")
        try:
            wanted = listing.ListRequest(
                workflow=workflow, statuses=sorted(set(status or [])), id_prefix=id_prefix,
                started_after=started_after, started_before=started_before,
                updated_after=updated_after, updated_before=updated_before,
                sort=sort, limit=limit, cursor=cursor, contains=listing.json_filters(params),
            )  # fmt: skip
            sql, args = listing.build_query(wanted, listing.SUMMARY_COLUMNS)
        except listing.ListProblem as problem:
            return error_response(422, str(problem))
        rows = await queries.list_page(request.app.state.pool, sql, args)
        return OrjsonResponse(listing.page(wanted, rows))

    @app.get(
        "/executions/counts",
        openapi_extra={SCOPE_KEY: READ},
        responses=documented(422, 503, s503=_PG_503),
    )
    async def execution_counts(
        request: Request,
        ended_within: Annotated[float, Query(gt=0, le=7 * 86_400)] = 3_600,
    ) -> OrjsonResponse:
        """Executions by workflow and status: every live one (running, waiting, sleeping,
        blocked, ...), and those that ended (completed, failed, cancelled) in the last
        `ended_within` seconds (default an hour)."""
        return OrjsonResponse(await queries.counts(request.app.state.pool, ended_within))

    @app.get(
        "/executions/{execution_id}/state",
        openapi_extra={SCOPE_KEY: READ},
        responses=documented(404, 410, 422, 503, s503=_PG_503),
    )
    async def execution_state(
        execution_id: ExecutionId,
        request: Request,
        version: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
        diff_: Annotated[
            str | None, Query(alias="diff", description="A..B: what changed from A to B")
        ] = None,
    ) -> OrjsonResponse:
        """The execution's state after event `version` (default: its latest), folded from its
        history by the engine's own code; or with `diff=A..B` the changes from the state at
        version A to the one at B (paths, op added/removed/changed, from, to)."""
        if diff_ is not None and version is not None:
            return error_response(422, "give version or diff, not both")
        versions: list[int] = []
        if diff_ is not None:
            m = _DIFF.match(diff_)
            if m is None or not 1 <= int(m[1]) <= int(m[2]):
                return error_response(422, "diff must be A..B with 1 <= A <= B")
            versions = [int(m[1]), int(m[2])]
        wanted = max(versions) if versions else version
        if wanted is not None and wanted > MAX_FOLD_EVENTS:
            return error_response(422, f"time travel folds at most {MAX_FOLD_EVENTS} events")
        last, history = await queries.history_upto(request.app.state.pool, execution_id, wanted)
        if last is None:
            return await missing_execution(request, execution_id)
        versions = versions or [version or last]
        if max(versions) > last:
            return error_response(404, f"the execution has no version {max(versions)} yet",
                                  execution_id=execution_id, last_version=last)  # fmt: skip
        states = states_at(history, versions)
        body: dict[str, Any] = {"execution_id": execution_id, "last_version": last}
        if diff_ is not None:
            a, b = versions
            body.update({"from_version": a, "to_version": b, "changes": diff(states[a], states[b])})
        else:
            body.update({"version": versions[0], "state": states[versions[0]]})
        return OrjsonResponse(body)
