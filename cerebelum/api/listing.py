"""GET /executions: filters, the order, and keyset pages, as one parameterised SQL query.

A page is the next `limit` rows after the last one the caller saw, in a total order: the sort
time (`started`: when the execution started, `updated`: its last event), newest first, then the
execution id. The cursor names that last row, so the 500th page costs what the first does (one
index range scan, migration 006), and rows written meanwhile neither shift nor repeat a page:
an execution that moves (its `updated` time changes) shows where it is when its page is read.

Filters (all optional, combined with AND):
    workflow, status (repeatable: any of them), id_prefix,
    started_after / started_before, updated_after / updated_before (ISO 8601; a time without
    a zone is UTC; after is inclusive, before exclusive),
    input.<path>=<value> and output.<path>=<value>: the inputs (output) contain that value at
    that dotted path (JSONB containment `@>`, a GIN index); the value is JSON when it parses
    as JSON (42, true, null, "42") and a string otherwise.
A query parameter none of these names is refused (422): a typo never silently widens a list.

Executions without a start time (a row mirrored from a history whose start was not seen) sort
as the oldest under `started`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from cerebelum.db import cursors

SORTS = {
    # The sort key of each order, exactly as migration 006's indexes spell it.
    "started": "coalesce(started_at, '-infinity'::timestamptz)",
    "updated": "updated_at",
}
# A list leaves out the payloads (inputs, output, error), which may be large.
SUMMARY_COLUMNS = (
    "execution_id, workflow, workflow_version, status, current_step, "
    "started_at, updated_at, finished_at, last_version"
)
PLAIN_PARAMETERS = frozenset(
    {"workflow", "status", "id_prefix", "started_after", "started_before", "updated_after",
     "updated_before", "sort", "limit", "cursor"}
)  # fmt: skip
JSON_FILTERS = {"input.": "inputs", "output.": "output"}
MAX_JSON_FILTERS = 8
MAX_PATH_DEPTH = 8


class ListProblem(ValueError):
    """A list request that cannot be answered (422), with the reason."""


@dataclass(slots=True)
class ListRequest:
    workflow: str | None = None
    statuses: list[str] = field(default_factory=list)
    id_prefix: str | None = None
    started_after: datetime | None = None
    started_before: datetime | None = None
    updated_after: datetime | None = None
    updated_before: datetime | None = None
    sort: str = "started"
    limit: int = 100
    cursor: str | None = None
    # (column, the JSON document it must contain)
    contains: list[tuple[str, Any]] = field(default_factory=list)


def unknown_parameters(names: list[str]) -> list[str]:
    """The query parameters a list request does not understand."""
    return sorted(
        {n for n in names if n not in PLAIN_PARAMETERS and not n.startswith(tuple(JSON_FILTERS))}
    )


def json_filters(params: list[tuple[str, str]]) -> list[tuple[str, Any]]:
    """`input.a.b=v` → ("inputs", {"a": {"b": v}}), and the same for `output.`."""
    found: list[tuple[str, Any]] = []
    for name, raw in params:
        for prefix, column in JSON_FILTERS.items():
            if name.startswith(prefix):
                path = name[len(prefix) :].split(".")
                if not all(path) or len(path) > MAX_PATH_DEPTH:
                    raise ListProblem(
                        f"{name!r}: a filter names a dotted path of 1 to {MAX_PATH_DEPTH} keys"
                    )
                document: Any = _json_value(raw)
                for key in reversed(path):
                    document = {key: document}
                found.append((column, document))
    if len(found) > MAX_JSON_FILTERS:
        raise ListProblem(f"at most {MAX_JSON_FILTERS} input./output. filters")
    return found


def _json_value(raw: str) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw


def encode_cursor(sort: str, key: datetime | None, execution_id: str) -> str:
    return cursors.pack([sort, None if key is None else key.isoformat(), execution_id])


def decode_cursor(cursor: str, sort: str) -> tuple[datetime | None, str]:
    """The (sort key, execution id) a cursor names; ListProblem if it is not one of ours or
    was made for another order."""
    try:
        made_for, stamp, execution_id = cursors.unpack(cursor)
        key = None if stamp is None else datetime.fromisoformat(stamp)
    except (ValueError, TypeError):
        raise ListProblem("cursor is not one this API gave out") from None
    if made_for != sort or not isinstance(execution_id, str):
        raise ListProblem(f"cursor was made for another order than sort={sort}")
    return key, execution_id


def build_query(request: ListRequest, columns: str) -> tuple[str, list[Any]]:
    """The SQL and its arguments for one page (limit + 1 rows: the extra one says whether
    another page follows)."""
    if request.sort not in SORTS:
        raise ListProblem(f"sort must be one of {', '.join(SORTS)}")
    key = SORTS[request.sort]
    args: list[Any] = []
    where: list[str] = []

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    if request.workflow is not None:
        where.append(f"workflow = {arg(request.workflow)}")
    if request.id_prefix:
        where.append(f"starts_with(execution_id, {arg(request.id_prefix)})")
    for column, after, before in (
        ("started_at", request.started_after, request.started_before),
        ("updated_at", request.updated_after, request.updated_before),
    ):
        if after is not None:
            where.append(f"{column} >= {arg(_utc(after))}")
        if before is not None:
            where.append(f"{column} < {arg(_utc(before))}")
    for column, document in request.contains:
        where.append(f"{column} @> {arg(document)}::jsonb")  # the pool encodes jsonb
    if request.cursor is not None:
        stamp, last_id = decode_cursor(request.cursor, request.sort)
        # -infinity is how the key spells "no start time"; the cursor keeps it as null.
        bound = "'-infinity'::timestamptz" if stamp is None else arg(stamp)
        where.append(f"({key}, execution_id) < ({bound}, {arg(last_id)})")
    limit = arg(request.limit + 1)
    order = f"ORDER BY {key} DESC, execution_id DESC LIMIT {limit}"

    def select(conditions: list[str]) -> str:
        sql = f"SELECT {columns}, {key} AS sort_key FROM executions"
        return sql + (" WHERE " + " AND ".join(conditions) if conditions else "") + " " + order

    if len(request.statuses) <= 1:
        statuses = [f"status = {arg(s)}" for s in request.statuses]
        return select(where + statuses), args
    # Several statuses: one ordered range scan each (status, key, id), merged. `status = ANY`
    # would read every matching row and sort them, whatever the page.
    parts = [f"({select([*where, f'status = {arg(s)}'])})" for s in request.statuses]
    merged = f"ORDER BY sort_key DESC, execution_id DESC LIMIT {limit}"
    return f"SELECT * FROM ({' UNION ALL '.join(parts)}) AS pages {merged}", args


def page(request: ListRequest, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The response body: at most `limit` rows and the cursor of the next page (or null)."""
    more = len(rows) > request.limit
    rows = rows[: request.limit]
    cursor = None
    if more and rows:
        last = rows[-1]
        key = last["sort_key"]
        cursor = encode_cursor(request.sort, None if _is_minus_infinity(key) else key,
                               last["execution_id"])  # fmt: skip
    for row in rows:
        del row["sort_key"]
    return {"executions": rows, "next_cursor": cursor}


def _is_minus_infinity(value: Any) -> bool:
    # asyncpg returns -infinity timestamps as datetime.min (naive or aware by version).
    return isinstance(value, datetime) and value.replace(tzinfo=None) == datetime.min


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
