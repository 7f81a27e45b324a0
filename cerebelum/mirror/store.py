"""Writing a batch of events to PostgreSQL: two statements in one transaction.

Both statements send whole columns as arrays and unnest them on the server, so a batch costs
four round trips (BEGIN, events, executions, COMMIT) whatever its size.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from cerebelum.mirror.fold import EventRow, ExecutionRow, fold

INSERT_EVENTS = """
INSERT INTO events (execution_id, version, type, schema, at, data, kafka_partition, kafka_offset)
SELECT e, v, t, s, timestamptz 'epoch' + a * interval '1 millisecond', d::jsonb, p, o
FROM unnest($1::text[], $2::int4[], $3::text[], $4::int2[], $5::int8[], $6::text[],
            $7::int4[], $8::int8[]) AS u(e, v, t, s, a, d, p, o)
ON CONFLICT DO NOTHING
"""

# The WHERE keeps a row from going backwards: an older batch (a replay, a slow mirror that lost
# its partitions) changes nothing. COALESCE keeps what earlier batches set and this one did not,
# except the error of a batch that finishes the execution (finished_at set): that one is final,
# so a completion's NULL clears an earlier attempt's error.
UPSERT_EXECUTIONS = """
INSERT INTO executions AS x (
    execution_id, workflow, workflow_version, status, current_step, inputs, output, error,
    started_at, updated_at, finished_at, last_version, kafka_partition)
SELECT e, w, wv, st, cs, i::jsonb, o::jsonb, er::jsonb,
       timestamptz 'epoch' + sa * interval '1 millisecond',
       timestamptz 'epoch' + ua * interval '1 millisecond',
       timestamptz 'epoch' + fa * interval '1 millisecond',
       lv, kp
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
            $7::text[], $8::text[], $9::int8[], $10::int8[], $11::int8[], $12::int4[],
            $13::int4[])
     AS u(e, w, wv, st, cs, i, o, er, sa, ua, fa, lv, kp)
ON CONFLICT (execution_id) DO UPDATE SET
    workflow         = COALESCE(EXCLUDED.workflow, x.workflow),
    workflow_version = COALESCE(EXCLUDED.workflow_version, x.workflow_version),
    status           = COALESCE(EXCLUDED.status, x.status),
    current_step     = COALESCE(EXCLUDED.current_step, x.current_step),
    inputs           = COALESCE(EXCLUDED.inputs, x.inputs),
    output           = COALESCE(EXCLUDED.output, x.output),
    error            = CASE WHEN EXCLUDED.finished_at IS NOT NULL THEN EXCLUDED.error
                            ELSE COALESCE(EXCLUDED.error, x.error) END,
    started_at       = COALESCE(EXCLUDED.started_at, x.started_at),
    finished_at      = COALESCE(EXCLUDED.finished_at, x.finished_at),
    kafka_partition  = COALESCE(EXCLUDED.kafka_partition, x.kafka_partition),
    updated_at       = EXCLUDED.updated_at,
    last_version     = EXCLUDED.last_version
WHERE x.last_version < EXCLUDED.last_version
"""


async def write_batch(conn: asyncpg.Connection, rows: Sequence[EventRow], channel: str) -> int:
    """Write sorted, deduplicated event rows and their executions' rows in one transaction,
    and tell `channel`'s listeners when it commits.

    `channel`: the namespace's (Names.mirrored_channel). Told at each batch's commit
    (PostgreSQL delivers a NOTIFY when its transaction commits): the API's readers that wait
    for an execution to appear or reach a status look again (cerebelum.api.visibility). No
    payload: a batch may hold thousands of executions.

    Returns how many events were new (the rest were in the table already).
    """
    if not rows:
        return 0
    executions = fold(rows)
    async with conn.transaction():
        status = await conn.execute(INSERT_EVENTS, *event_columns(rows))
        await upsert_executions(conn, executions)
        await conn.execute(f"NOTIFY {channel}")
    return int(status.rsplit(" ", 1)[1])


async def upsert_executions(conn: asyncpg.Connection, rows: Sequence[ExecutionRow]) -> None:
    """Upsert folded rows (sorted by execution_id); older ones than stored change nothing."""
    if rows:
        await conn.execute(UPSERT_EXECUTIONS, *execution_columns(rows))


def event_columns(rows: Sequence[EventRow]) -> tuple[list[object], ...]:
    """The events as eight column arrays, in INSERT_EVENTS' parameter order."""
    return (
        [r.execution_id for r in rows],
        [r.version for r in rows],
        [r.type for r in rows],
        [r.schema for r in rows],
        [r.at for r in rows],
        [r.data for r in rows],
        [r.kafka_partition for r in rows],
        [r.kafka_offset for r in rows],
    )


def execution_columns(rows: Sequence[ExecutionRow]) -> tuple[list[object], ...]:
    """The folded rows as thirteen column arrays, in UPSERT_EXECUTIONS' parameter order."""
    return (
        [r.execution_id for r in rows],
        [r.workflow for r in rows],
        [r.workflow_version for r in rows],
        [r.status for r in rows],
        [r.current_step for r in rows],
        [r.inputs for r in rows],
        [r.output for r in rows],
        [r.error for r in rows],
        [r.started_at for r in rows],
        [r.updated_at for r in rows],
        [r.finished_at for r in rows],
        [r.last_version for r in rows],
        [r.kafka_partition for r in rows],
    )


RECORD_REJECT = """
INSERT INTO mirror_rejects
    (kafka_partition, kafka_offset, execution_id, version, event, sqlstate, message)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (kafka_partition, kafka_offset) DO NOTHING
"""


async def record_reject(
    conn: asyncpg.Connection, row: EventRow, sqlstate: str | None, message: str
) -> bool:
    """Set one refused event aside in mirror_rejects; False if it was recorded before."""
    status = await conn.execute(
        RECORD_REJECT, row.kafka_partition, row.kafka_offset, row.execution_id, row.version,
        row.data, sqlstate, message,
    )  # fmt: skip
    return bool(status.endswith(" 1"))
