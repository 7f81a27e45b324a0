"""Dead letters in PostgreSQL (the mirror's copy of cerebelum.dlq): list, read, replay.

Shared by the API (GET /dlq, POST /dlq/{id}/replay) and the CLI (`cerebelum dlq`). An id is
`<partition>-<offset>` of the record in cerebelum.dlq.

A replay sends the refused bytes again, keyed by the execution id (the one the worker named,
else the command's own), so it lands on the execution's home partition whatever key it came
with (a command off its home is one reason for refusal); once: a second replay of the same dead
letter is refused unless forced. It is claimed in PostgreSQL before it is produced and released
if Kafka does not take it, so two callers never both replay it.

A start's fate: when a start was refused (its StartExecution dead-lettered, say for a workflow no
worker runs), no execution row ever appears; `refused_starts` finds the refusal, so a reader
answers with it (HTTP 410 `start_refused`) instead of "not found". A refusal that was replayed is
no longer the fate: the replay decides it (a replay refused again is a new dead letter).
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson

from cerebelum.client import Client
from cerebelum.constants import CMD_START
from cerebelum.core.ids import id_problem
from cerebelum.db import cursors

COLUMNS = (
    "kafka_partition, kafka_offset, at, reason, execution_id, source_topic, source_partition, "
    "source_offset, key, value, replayed_at, replayed_by"
)
_ID = re.compile(r"^(\d{1,5})-(\d{1,19})$")
# Refused starts read per execution when looking for its fate: the newest is the one that counts;
# a few more cover refusals recorded before the start a reader waits for (ignored by `since`).
MAX_REFUSALS_READ = 4


class DeadLetterProblem(ValueError):
    """A request about dead letters that cannot be done: `status` is its HTTP answer."""

    def __init__(self, status: int, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.status = status
        self.fields = fields


@dataclass(slots=True)
class DeadLetterQuery:
    reason: str | None = None  # a part of it, any case
    execution_id: str | None = None
    after: datetime | None = None
    before: datetime | None = None
    limit: int = 50
    cursor: str | None = None


def parse_id(dead_letter_id: str) -> tuple[int, int]:
    m = _ID.match(dead_letter_id)
    if m is None:
        raise DeadLetterProblem(422, f"{dead_letter_id!r} is not a dead letter id "
                                "(partition-offset)")  # fmt: skip
    return int(m[1]), int(m[2])


async def list_dead_letters(pool: asyncpg.Pool, query: DeadLetterQuery) -> dict[str, Any]:
    """{"dead_letters": [...] newest first, "next_cursor": str | None}."""
    where: list[str] = []
    args: list[Any] = []

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    if query.reason:
        escaped = re.sub(r"([\\%_])", r"\\\1", query.reason)
        where.append(f"reason ILIKE {arg('%' + escaped + '%')}")
    if query.execution_id is not None:
        where.append(f"execution_id = {arg(query.execution_id)}")
    if query.after is not None:
        where.append(f"at >= {arg(_utc(query.after))}")
    if query.before is not None:
        where.append(f"at < {arg(_utc(query.before))}")
    if query.cursor is not None:
        at, partition, offset = _decode_cursor(query.cursor)
        where.append(f"(at, kafka_partition, kafka_offset) < "
                     f"({arg(at)}, {arg(partition)}, {arg(offset)})")  # fmt: skip
    sql = f"SELECT {COLUMNS} FROM dead_letters"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY at DESC, kafka_partition DESC, kafka_offset DESC"
    sql += f" LIMIT {arg(query.limit + 1)}"
    rows = [dict(r) for r in await pool.fetch(sql, *args)]
    more, rows = len(rows) > query.limit, rows[: query.limit]
    cursor = None
    if more:
        last = rows[-1]
        cursor = cursors.pack([last["at"].isoformat(), last["kafka_partition"],
                               last["kafka_offset"]])  # fmt: skip
    return {"dead_letters": [shown(r) for r in rows], "next_cursor": cursor}


def _decode_cursor(cursor: str) -> tuple[datetime, int, int]:
    try:
        at, partition, offset = cursors.unpack(cursor)
        return datetime.fromisoformat(at), int(partition), int(offset)
    except (ValueError, TypeError):
        raise DeadLetterProblem(422, "cursor is not one this API gave out") from None


async def get_dead_letter(pool: asyncpg.Pool, dead_letter_id: str) -> dict[str, Any]:
    """The dead letter as shown; DeadLetterProblem 404 if there is none."""
    return shown(await _row(pool, dead_letter_id))


async def _row(pool: asyncpg.Pool, dead_letter_id: str) -> dict[str, Any]:
    partition, offset = parse_id(dead_letter_id)
    row = await pool.fetchrow(
        f"SELECT {COLUMNS} FROM dead_letters WHERE kafka_partition = $1 AND kafka_offset = $2",
        partition, offset,
    )  # fmt: skip
    if row is None:
        raise DeadLetterProblem(404, "dead letter not found", id=dead_letter_id)
    return dict(row)


async def replay(
    pool: asyncpg.Pool, client: Client, dead_letter_id: str, caller: str, force: bool = False
) -> dict[str, Any]:
    """Produce the dead letter's command again, keyed by its execution id. Raises
    DeadLetterProblem (404, 409) and KafkaUnavailable (the claim is then released)."""
    row = await _row(pool, dead_letter_id)
    execution_id = replay_key(row)
    if execution_id is None:
        raise DeadLetterProblem(409, "the command names no valid execution id: it cannot be "
                                "keyed to a partition", id=dead_letter_id)  # fmt: skip
    where = (row["kafka_partition"], row["kafka_offset"])
    claimed = await pool.fetchval(
        "UPDATE dead_letters SET replayed_at = now(), replayed_by = $3 "
        "WHERE kafka_partition = $1 AND kafka_offset = $2 AND (replayed_at IS NULL OR $4) "
        "RETURNING replayed_at",
        *where, caller, force,
    )  # fmt: skip
    if claimed is None:
        raise DeadLetterProblem(409, "replayed before; force it to send it again",
                                id=dead_letter_id, replayed_at=row["replayed_at"],
                                replayed_by=row["replayed_by"])  # fmt: skip
    try:
        await client.send_command(execution_id, bytes(row["value"]))
    except BaseException:
        await pool.execute(
            "UPDATE dead_letters SET replayed_at = $3, replayed_by = $4 "
            "WHERE kafka_partition = $1 AND kafka_offset = $2",
            *where, row["replayed_at"], row["replayed_by"],
        )  # fmt: skip
        raise
    return {"id": dead_letter_id, "execution_id": execution_id, "replayed_at": claimed}


async def refused_starts(
    pool: asyncpg.Pool, execution_ids: list[str], since: dict[str, datetime] | None = None
) -> dict[str, dict[str, Any]]:
    """For each of `execution_ids` whose start was refused (and not replayed since), the
    newest such dead letter: {"dead_letter_id", "reason", "at"}. `since` ignores, per id,
    refusals recorded before that time (the refusal of an earlier start with the same id)."""
    # Only rows that may hold a start (the type's name in the bytes; parsed below to be sure),
    # a bounded number: a flood of refused signals for one id costs nothing here.
    rows = await pool.fetch(
        "SELECT execution_id, kafka_partition, kafka_offset, at, reason, value "
        "FROM dead_letters WHERE execution_id = ANY($1::text[]) AND replayed_at IS NULL "
        "AND position($2::bytea in value) > 0 "
        "ORDER BY at DESC, kafka_partition DESC, kafka_offset DESC LIMIT $3",
        execution_ids, f'"{CMD_START}"'.encode(), MAX_REFUSALS_READ * len(execution_ids),
    )  # fmt: skip
    since = since or {}
    found: dict[str, dict[str, Any]] = {}
    for row in rows:  # newest first: the first start refused per id is its fate
        eid = row["execution_id"]
        if eid in found or (eid in since and row["at"] < since[eid]):
            continue
        command = _json(bytes(row["value"]))
        if isinstance(command, dict) and command.get("type") == CMD_START:
            found[eid] = {"dead_letter_id": f"{row['kafka_partition']}-{row['kafka_offset']}",
                          "reason": row["reason"], "at": row["at"]}  # fmt: skip
    return found


def replay_key(row: dict[str, Any]) -> str | None:
    """The execution id a replay is keyed by: the one the worker named, else the command's."""
    candidates = [row.get("execution_id")]
    command = _json(bytes(row["value"]))
    if isinstance(command, dict):
        candidates.append(command.get("execution_id"))
    for candidate in candidates:
        if isinstance(candidate, str) and id_problem(candidate, "execution_id") is None:
            return candidate
    return None


def shown(row: dict[str, Any]) -> dict[str, Any]:
    """A dead letter as shown: the command as JSON if it is JSON, else base64."""
    value = bytes(row["value"])
    command = _json(value)
    key = None if row["key"] is None else bytes(row["key"])
    return {
        "id": f"{row['kafka_partition']}-{row['kafka_offset']}",
        "at": row["at"],
        "reason": row["reason"],
        "execution_id": row["execution_id"],
        "source": {
            "topic": row["source_topic"],
            "partition": row["source_partition"],
            "offset": row["source_offset"],
        },  # fmt: skip
        "key": None if key is None else key.decode("utf-8", "replace"),
        "command": command,
        "value_base64": None if command is not None else base64.b64encode(value).decode(),
        "replayed_at": row["replayed_at"],
        "replayed_by": row["replayed_by"],
    }


def _json(value: bytes) -> Any:
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        return None


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
