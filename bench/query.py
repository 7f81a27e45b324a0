"""The query API on a large table: GET /executions, first page and deep pages, p50/p99.

    python -m bench.query --executions 1000000 --requests 200

1. a database of its own (`bench_query` on CEREBELUM_DATABASE_URL's server, dropped and made
   again), migrated; N executions written straight into `executions` by one INSERT ... SELECT
   generate_series (the list reads only that table): 5 workflows, 80 % completed, 8 % running,
   7 % waiting, 5 % failed, started over 30 days, inputs {"customer": "c-<0..9999>", "n": i};
   then ANALYZE;
2. the API app in this process (httpx over ASGI: routing, validation, the query, JSON), auth
   off, no Kafka needed for these routes;
3. for each scenario, the cursors of pages 1..500 (limit 100) by walking them once, then
   `--requests` timed requests of page 1 and of page 500, alternating.
Writes bench/results/query-<time>.json. Latency is per request, wall clock, in the client.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import replace
from typing import Any

import asyncpg
import httpx

from bench.common.base import say, settings
from bench.common.results import percentiles, write_result
from cerebelum.api import create_app
from cerebelum.config import ApiSettings
from cerebelum.db import migrate

DATABASE = "bench_query"
PAGE = 100
DEEP = 500
SCENARIOS: dict[str, dict[str, Any]] = {
    "all, by start": {},
    "all, by update": {"sort": "updated"},
    "one workflow": {"workflow": "wf-2"},
    "one status": {"status": "running"},
    "two statuses": {"status": ["running", "waiting"]},
    "by input (customer)": {"input.customer": "c-42"},
}
FILL = """
INSERT INTO executions (execution_id, workflow, workflow_version, status, current_step, inputs,
                        output, started_at, updated_at, finished_at, last_version,
                        kafka_partition)
SELECT 'q-' || lpad(i::text, 8, '0'), 'wf-' || (i % 5), 'v1',
       CASE WHEN i % 100 < 80 THEN 'completed' WHEN i % 100 < 88 THEN 'running'
            WHEN i % 100 < 95 THEN 'waiting' ELSE 'failed' END,
       'step-' || (i % 3),
       jsonb_build_object('customer', 'c-' || (i % 10000), 'n', i),
       CASE WHEN i % 100 < 80 THEN jsonb_build_object('ok', true) END,
       now() - interval '30 days' + (i * interval '30 days' / $1),
       now() - interval '30 days' + (i * interval '30 days' / $1) + interval '2 seconds',
       NULL, 4, i % 64
FROM generate_series(1, $1) AS i
"""


async def fill(url: str, n: int) -> str:
    server = url.rsplit("/", 1)[0]
    admin = await asyncpg.connect(server + "/postgres")
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        await admin.execute(f"CREATE DATABASE {DATABASE}")
    finally:
        await admin.close()
    target = f"{server}/{DATABASE}"
    await migrate(target)
    conn = await asyncpg.connect(target)
    try:
        started = time.monotonic()
        await conn.execute(FILL, n)
        await conn.execute("VACUUM ANALYZE executions")
        say(f"{n:,} executions written and analysed in {time.monotonic() - started:.0f} s")
    finally:
        await conn.close()
    return target


async def measure(target: str, requests: int) -> dict[str, Any]:
    app = create_app(replace(settings(), database_url=target), ApiSettings(auth=False))
    results: dict[str, Any] = {}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
            for name, params in SCENARIOS.items():
                cursors = [None]
                while len(cursors) < DEEP:
                    query = {**params, "limit": PAGE}
                    if cursors[-1] is not None:
                        query["cursor"] = cursors[-1]
                    body = (await http.get("/executions", params=query)).json()
                    if body["next_cursor"] is None:
                        break
                    cursors.append(body["next_cursor"])
                deep = cursors[-1]
                times: dict[str, list[float]] = {"first": [], f"page {len(cursors)}": []}
                for _ in range(requests):
                    for label, cursor in zip(times, (None, deep), strict=True):
                        query = {**params, "limit": PAGE, **({"cursor": cursor} if cursor else {})}
                        t0 = time.perf_counter()
                        response = await http.get("/executions", params=query)
                        times[label].append((time.perf_counter() - t0) * 1000)
                        assert response.status_code == 200, response.text
                results[name] = {label: percentiles(ms) for label, ms in times.items()}
                line = ", ".join(f"{label} p50 {v['p50']:.1f} p99 {v['p99']:.1f} ms"
                                 for label, v in results[name].items())  # fmt: skip
                say(f"{name}: {line}")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--executions", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=200, help="timed requests per page")
    args = parser.parse_args()
    url = settings().database_url
    target = asyncio.run(fill(url, args.executions))
    results = asyncio.run(measure(target, args.requests))
    write_result("query", {"executions": args.executions, "page_size": PAGE,
                           "requests": args.requests, "scenarios": results})  # fmt: skip


if __name__ == "__main__":
    main()
