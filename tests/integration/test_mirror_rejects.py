"""Events PostgreSQL refuses for good are set aside in mirror_rejects; the rest keeps flowing."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import orjson
import pytest
from aiokafka import TopicPartition

from cerebelum.client import partition_for
from cerebelum.config import Settings
from cerebelum.mirror import Mirror
from tests.integration.test_mirror import (
    committed_offset,
    completed_history,
    end_offsets,
    produce,
    run_mirror_until,
    set_group_offsets,
)

pytestmark = pytest.mark.integration


@pytest.fixture
async def pool(settings: Settings, database: None) -> AsyncIterator[asyncpg.Pool]:
    p = await asyncpg.create_pool(settings.namespace_database_url, min_size=1, max_size=2)
    assert p is not None
    yield p
    await p.close()


def ids_on_one_partition(run: str, n: int) -> list[str]:
    """n ids that share a home partition, so they share a batch and a writer."""
    first = f"reject-{run}-0"
    found = [first]
    i = 1
    while len(found) < n:
        candidate = f"reject-{run}-{i}"
        if partition_for(candidate) == partition_for(first):
            found.append(candidate)
        i += 1
    return found


async def test_permanent_errors_are_set_aside_and_the_rest_is_mirrored(
    settings: Settings, topics: None, pool: asyncpg.Pool
) -> None:
    run = uuid.uuid4().hex[:8]
    # Two executions PostgreSQL will refuse, beside healthy ones on the same partition and others.
    checked, triggered, *neighbours = ids_on_one_partition(run, 4)
    # On other partitions for sure (a random id lands on checked's one time in 16 of 4 tries).
    others = (f"reject-{run}-other-{i}" for i in range(1000))
    elsewhere = [e for e in others if partition_for(e) != partition_for(checked)][:4]
    healthy = neighbours + elsewhere
    constraint, trigger = f"test_reject_{run}", f"test_reject_{run}"
    # A CHECK on executions refuses every event of `checked` (each upserts its row): 23514.
    await pool.execute(
        f"ALTER TABLE executions ADD CONSTRAINT {constraint} "
        f"CHECK (execution_id <> '{checked}')"
    )
    # A trigger on events refuses version 3 of `triggered` only: P0001.
    await pool.execute(
        f"""CREATE FUNCTION {trigger}() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.execution_id = '{triggered}' AND NEW.version = 3 THEN
                RAISE EXCEPTION 'test trigger refuses % v%', NEW.execution_id, NEW.version;
            END IF;
            RETURN NEW;
        END $$"""
    )
    await pool.execute(
        f"CREATE TRIGGER {trigger} BEFORE INSERT ON events "
        f"FOR EACH ROW EXECUTE FUNCTION {trigger}()"
    )
    try:
        start = await end_offsets(settings)
        every = [checked, triggered, *healthy]
        await produce(settings, [(i, orjson.dumps(e)) for i in every for e in completed_history(i)])
        group = f"test-mirror-rejects-{run}"
        await set_group_offsets(settings, group, start)

        async def healthy_done() -> bool:
            done = await pool.fetchval(
                "SELECT count(*) FROM executions "
                "WHERE execution_id = ANY($1::text[]) AND last_version = 6",
                [triggered, *healthy],
            )
            return bool(done == len(healthy) + 1)

        mirror = Mirror(settings, group_id=group)
        # Before the fix the mirror retried the refused batch forever: this timed out.
        await run_mirror_until(mirror, healthy_done, timeout=30)
        assert mirror.stats.rejected == 7  # six events of `checked`, one of `triggered`

        rejects = await pool.fetch(
            "SELECT * FROM mirror_rejects WHERE execution_id = ANY($1::text[]) "
            "ORDER BY execution_id, version",
            [checked, triggered],
        )
        assert [(r["execution_id"], r["version"], r["sqlstate"]) for r in rejects] == [
            *[(checked, v, "23514") for v in range(1, 7)],
            (triggered, 3, "P0001"),
        ]
        history = {e["version"]: e for e in completed_history(checked)}
        for r in rejects:
            assert r["kafka_partition"] == partition_for(checked)
            assert r["message"] and r["recorded_at"] is not None
            if r["execution_id"] == checked:
                assert orjson.loads(r["event"]) == history[r["version"]]
        stored = await pool.fetch(
            "SELECT version FROM events WHERE execution_id = $1 ORDER BY version", triggered
        )
        assert [r["version"] for r in stored] == [1, 2, 4, 5, 6]
        assert await pool.fetchval(
            "SELECT count(*) FROM events WHERE execution_id = ANY($1::text[])", healthy
        ) == 6 * len(healthy)

        # The offsets moved past the refused events: the partition is not stalled.
        tp = TopicPartition(settings.names.events, partition_for(checked))
        assert await committed_offset(settings, group, tp) == start[tp] + 6 * 4

        # A replay records nothing twice.
        replay = f"{group}-replay"
        await set_group_offsets(settings, replay, start)
        again = Mirror(settings, group_id=replay)

        async def replayed() -> bool:
            return bool(again.stats.events_seen + again.stats.rejected >= 6 * len(every))

        await run_mirror_until(again, replayed, timeout=30)
        assert (
            await pool.fetchval(
                "SELECT count(*) FROM mirror_rejects WHERE execution_id = ANY($1::text[])",
                [checked, triggered],
            )
            == 7
        )
    finally:
        await pool.execute(f"DROP TRIGGER IF EXISTS {trigger} ON events")
        await pool.execute(f"DROP FUNCTION IF EXISTS {trigger}()")
        await pool.execute(f"ALTER TABLE executions DROP CONSTRAINT IF EXISTS {constraint}")
