"""GET /executions (filters, keyset pages) and GET /executions/{id}/state (time travel), in
process against the real database, over histories written the way the mirror writes them."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest

from cerebelum.config import Settings
from cerebelum.core import events as ev
from cerebelum.core.apply import fold
from cerebelum.core.events import make_event
from cerebelum.db import connect_pool
from cerebelum.mirror.fold import decode_event, sort_and_dedupe
from cerebelum.mirror.store import write_batch
from tests.integration.test_cli import acli

pytestmark = pytest.mark.integration

AT = 1_700_000_000_000
GOLDEN = Path(__file__).parent.parent / "golden" / "order-approved.json"


@pytest.fixture(scope="module")
async def pool(settings: Settings, database: None) -> AsyncIterator[asyncpg.Pool]:
    p = await connect_pool(settings.namespace_database_url, min_size=1, max_size=2)
    yield p
    await p.close()


async def mirror(
    settings: Settings, pool: asyncpg.Pool, history: list[dict[str, Any]], partition: int = 5
) -> None:
    rows = sort_and_dedupe(
        decode_event(orjson.dumps(e), partition, i) for i, e in enumerate(history)
    )
    async with pool.acquire() as conn:
        await write_batch(conn, rows, settings.names.mirrored_channel)


def history(eid: str, workflow: str, at: int, inputs: Any, end: str | None) -> list[dict[str, Any]]:
    events = [
        make_event(eid, 1, ev.EXECUTION_STARTED, at, workflow=workflow, workflow_version="v1",
                   inputs=inputs),
        make_event(eid, 2, ev.STEP_SCHEDULED, at + 1, step="a", node=0, attempt=1),
    ]  # fmt: skip
    if end == "completed":
        events.append(make_event(eid, 3, ev.STEP_COMPLETED, at + 2, step="a", attempt=1,
                                 result=1))  # fmt: skip
        events.append(make_event(eid, 4, ev.EXECUTION_COMPLETED, at + 3,
                                 output={"grade": "A" if inputs["n"] % 2 else "B"}))  # fmt: skip
    return events


@pytest.fixture(scope="module")
async def population(settings: Settings, pool: asyncpg.Pool) -> dict[str, Any]:
    """25 executions of one new workflow, started a second apart (ids shuffled against the
    start order); the even ones completed, the odd ones still running."""
    workflow = f"lists-{uuid.uuid4().hex[:8]}"
    ids = []
    for n in range(25):
        eid = f"{workflow}-{(n * 7) % 25:02d}-{uuid.uuid4().hex[:6]}"
        ids.append(eid)
        inputs = {"n": n, "customer": f"c-{n % 3}", "tags": {"tier": "gold" if n < 5 else "std"}}
        end = "completed" if n % 2 == 0 else None
        await mirror(settings, pool, history(eid, workflow, AT + n * 1000, inputs, end))
    return {"workflow": workflow, "ids": ids}  # ids[n] started at AT + n s


async def all_pages(api: httpx.AsyncClient, **params: Any) -> tuple[list[str], int]:
    seen: list[str] = []
    pages = 0
    cursor = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = await api.get("/executions", params=query)
        assert response.status_code == 200, response.text
        body = response.json()
        pages += 1
        seen += [row["execution_id"] for row in body["executions"]]
        cursor = body["next_cursor"]
        if cursor is None:
            return seen, pages
        assert pages < 100, "the cursor does not advance"


async def test_pages_cover_every_execution_once_newest_first(
    api: httpx.AsyncClient, population: dict[str, Any]
) -> None:
    seen, pages = await all_pages(api, workflow=population["workflow"], limit=10)
    assert seen == population["ids"][::-1] and pages == 3
    seen, pages = await all_pages(api, workflow=population["workflow"], limit=25)
    assert len(seen) == 25 and pages == 1  # a full last page says so: no empty extra page


async def test_a_page_is_stable_while_newer_executions_arrive(
    settings: Settings, api: httpx.AsyncClient, population: dict[str, Any], pool: asyncpg.Pool
) -> None:
    workflow = population["workflow"]
    first = (await api.get("/executions", params={"workflow": workflow, "limit": 5})).json()
    newer = f"{workflow}-newer-{uuid.uuid4().hex[:6]}"
    await mirror(settings, pool, history(newer, workflow, AT + 10**6, {"n": 99}, None))
    params = {"workflow": workflow, "limit": 5, "cursor": first["next_cursor"]}
    try:
        second = (await api.get("/executions", params=params)).json()
        assert [r["execution_id"] for r in second["executions"]] == population["ids"][::-1][5:10]
    finally:
        async with pool.acquire() as conn:
            await conn.execute("DELETE FROM events WHERE execution_id = $1", newer)
            await conn.execute("DELETE FROM executions WHERE execution_id = $1", newer)


async def test_sort_by_last_update(api: httpx.AsyncClient, population: dict[str, Any]) -> None:
    ids = population["ids"]
    seen, _ = await all_pages(api, workflow=population["workflow"], sort="updated", limit=7)
    # Every history here ends within 3 ms of its start: the update order is the start order.
    assert [i for i in seen if i in ids] == ids[::-1]


async def test_filters(api: httpx.AsyncClient, population: dict[str, Any]) -> None:
    workflow, ids = population["workflow"], population["ids"]

    async def listed(**params: Any) -> list[str]:
        seen, _ = await all_pages(api, workflow=workflow, **params)
        return seen

    running = [ids[n] for n in range(25) if n % 2][::-1]
    assert await listed(status="running") == running
    assert sorted(await listed(status=["running", "completed"])) == sorted(ids)
    started_at = lambda n: f"2023-11-14T22:13:{20 + n:02d}Z"  # noqa: E731 - AT + n s
    assert await listed(started_after=started_at(20)) == ids[20:][::-1]
    assert await listed(started_after=started_at(3), started_before=started_at(6)) == [
        ids[5], ids[4], ids[3]]  # fmt: skip
    assert await listed(id_prefix=f"{workflow}-07-") == [ids[1]]  # (1 * 7) % 25 == 7
    assert await listed(**{"input.customer": "c-1"}) == [ids[n] for n in range(25)
                                                         if n % 3 == 1][::-1]  # fmt: skip
    assert await listed(**{"input.n": "12"}) == [ids[12]]  # 12 is JSON: the number
    assert await listed(**{"input.n": '"12"'}) == []  # the string "12" is no input's n
    assert await listed(**{"input.tags.tier": "gold", "input.customer": "c-0"}) == [ids[3], ids[0]]
    assert await listed(**{"output.grade": "A"}) == []  # only even ones completed: all B
    assert await listed(**{"output.grade": "B"}) == [ids[n] for n in range(0, 25, 2)][::-1]


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ({"offset": "100"}, "unknown query parameters: offset"),
        ({"page": "2", "sorted": "x"}, "unknown query parameters: page, sorted"),
        ({"cursor": "not-a-cursor"}, "cursor is not one this API gave out"),
        ({"input.": "x"}, "a filter names a dotted path"),
        ({"input.a..b": "x"}, "a filter names a dotted path"),
    ],
)
async def test_what_a_list_does_not_understand_is_422_with_the_reason(
    api: httpx.AsyncClient, query: dict[str, str], says: str
) -> None:
    response = await api.get("/executions", params=query)
    assert response.status_code == 422, response.text
    assert says in response.json()["error"]


async def test_a_cursor_belongs_to_its_order(
    api: httpx.AsyncClient, population: dict[str, Any]
) -> None:
    params = {"workflow": population["workflow"], "limit": 3}
    cursor = (await api.get("/executions", params=params)).json()["next_cursor"]
    response = await api.get("/executions", params={**params, "sort": "updated", "cursor": cursor})
    assert response.status_code == 422
    assert "cursor was made for another order" in response.json()["error"]
    response = await api.get("/executions", params={**params, "sort": "elsewhen"})
    assert response.status_code == 422


async def test_the_state_at_every_version_is_the_cores_fold(
    settings: Settings, api: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    eid = f"travel-{uuid.uuid4().hex}"
    golden = [{**e, "execution_id": eid} for e in json.loads(GOLDEN.read_text())]
    await mirror(settings, pool, golden)
    for version in range(1, len(golden) + 1):
        response = await api.get(f"/executions/{eid}/state", params={"version": version})
        assert response.status_code == 200, response.text
        body = response.json()
        expected = fold(json.loads(json.dumps(golden[:version])))
        assert expected is not None
        assert body["version"] == version and body["last_version"] == len(golden)
        assert body["state"] == orjson.loads(orjson.dumps(expected.to_record()))
    latest = (await api.get(f"/executions/{eid}/state")).json()
    assert latest["version"] == len(golden) and latest["state"]["status"] == "completed"


async def test_the_difference_between_two_versions(
    settings: Settings, api: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    eid = f"travel-{uuid.uuid4().hex}"
    await mirror(settings, pool, history(eid, "wf-diff", AT, {"n": 1}, "completed"))
    body = (await api.get(f"/executions/{eid}/state", params={"diff": "2..4"})).json()
    assert (body["from_version"], body["to_version"]) == (2, 4)
    changes = {c["path"]: c for c in body["changes"]}
    assert changes["status"] == {"path": "status", "op": "changed", "from": "running",
                                 "to": "completed"}  # fmt: skip
    assert changes["results.a"] == {"path": "results.a", "op": "added", "to": 1}
    assert changes["output"] == {"path": "output", "op": "changed", "from": None,
                                 "to": {"grade": "A"}}  # fmt: skip
    assert changes["version"]["to"] == 4
    same = (await api.get(f"/executions/{eid}/state", params={"diff": "3..3"})).json()
    assert same["changes"] == []


@pytest.mark.parametrize(
    ("query", "status", "says"),
    [
        ({"version": "9"}, 404, "has no version 9 yet"),
        ({"version": "0"}, 422, "invalid request"),
        ({"diff": "3..2"}, 422, "diff must be A..B"),
        ({"diff": "1-2"}, 422, "diff must be A..B"),
        ({"diff": "1..2", "version": "1"}, 422, "version or diff, not both"),
    ],
)
async def test_time_travel_refusals(
    settings: Settings,
    api: httpx.AsyncClient,
    pool: asyncpg.Pool,
    query: dict[str, str],
    status: int,
    says: str,
) -> None:
    eid = f"travel-{uuid.uuid4().hex}"
    await mirror(settings, pool, history(eid, "wf-refusals", AT, {"n": 1}, "completed"))
    response = await api.get(f"/executions/{eid}/state", params=query)
    assert response.status_code == status, response.text
    assert says in response.json()["error"]
    nobody = await api.get(f"/executions/nobody-{uuid.uuid4().hex}/state")
    assert nobody.status_code == 404


async def test_the_cli_lists_pages_describes_and_travels(
    settings: Settings, population: dict[str, Any], pool: asyncpg.Pool
) -> None:
    workflow, ids = population["workflow"], population["ids"]
    listed = await acli(settings, "list", "--workflow", workflow, "--limit", "10", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [orjson.loads(line)["execution_id"] for line in listed.stdout.splitlines()] == (
        ids[::-1][:10])  # fmt: skip
    cursor = listed.stderr.split("--cursor ")[1].split()[0]
    second = await acli(settings, "list", "--workflow", workflow, "--limit", "10", "--cursor",
                        cursor, "--input", "customer=c-1")  # fmt: skip
    assert second.returncode == 0 and second.stdout.startswith("EXECUTION")
    assert [line.split()[0] for line in second.stdout.splitlines()[1:]] == [
        ids[n] for n in range(25) if n % 3 == 1
    ][::-1][3:]  # fmt: skip  (filters then pages)

    eid = f"travel-{uuid.uuid4().hex}"
    golden = [{**e, "execution_id": eid} for e in json.loads(GOLDEN.read_text())]
    await mirror(settings, pool, golden)
    described = await acli(settings, "describe", eid)
    assert described.returncode == 0, described.stderr
    assert "approval" in described.stdout and "completed" in described.stdout
    history = await acli(settings, "history", eid, "--json")
    assert [orjson.loads(line) for line in history.stdout.splitlines()] == golden
    state = await acli(settings, "state", eid, "--version", "10")
    assert orjson.loads(state.stdout)["state"]["waiting"] == "approval"
    changes = await acli(settings, "state", eid, "--diff", "10..12")
    paths = {orjson.loads(line)["path"] for line in changes.stdout.splitlines()}
    assert {"signals.approval", "version"} <= paths

    for args, says in [(("state", eid, "--version", "99"), "has no version 99 yet"),
                       (("describe", "bad id"), "may only contain"),
                       (("list", "--input", "nopath"), "give PATH=VALUE")]:  # fmt: skip
        result = await acli(settings, *args)
        assert result.returncode != 0 and says in result.stderr, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1  # one line, no traceback


async def test_counts_by_workflow_and_status(
    api: httpx.AsyncClient, population: dict[str, Any], pool: asyncpg.Pool
) -> None:
    workflow = population["workflow"]
    body = (await api.get("/executions/counts")).json()
    assert {"workflow": workflow, "status": "running", "count": 12} in body["live"]
    # The population's histories ended in 2023: none within the last hour, nor the last week.
    assert not [c for c in body["ended"] if c["workflow"] == workflow]
    week = (await api.get("/executions/counts", params={"ended_within": 7 * 86_400})).json()
    assert week["ended_within_s"] == 7 * 86_400
    assert not [c for c in week["ended"] if c["workflow"] == workflow]
    assert (await api.get("/executions/counts", params={"ended_within": 0})).status_code == 422
