"""`cerebelum cluster [--json] [--no-db]`: the workers, what each owns, lag and live executions.

Exit code 0, or 1 when a topic's partition count differs from topics/topics.json (the view then
lists the problem and the partitions no worker serves).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import asyncpg
import orjson
from aiokafka.errors import KafkaError

from cerebelum.admin.cluster import cluster_view
from cerebelum.config import Settings
from cerebelum.db import connect_pool

# The view is a handful of small requests; past this Kafka is not answering and we say so.
VIEW_TIMEOUT_S = 15.0
# Live counts are optional: an unreachable database must not hold the view up for long.
DB_CONNECT_TIMEOUT_S = 3.0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "cluster",
        help="show the workers, the partitions each owns, lag and live executions",
        description="Describe the worker group (cerebelum-workers): its members and the "
        "partitions of cerebelum.commands each owns, the lag per partition (committed offset "
        "vs end), live executions per partition (from PostgreSQL) and the mirror's lag. Exit code "
        "1 when a topic's partition count differs from topics/topics.json.",
    )
    p.add_argument("--json", action="store_true", help="print the view as JSON (as GET /cluster)")
    p.add_argument("--no-db", action="store_true", help="skip PostgreSQL (no live counts)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        view = asyncio.run(_view(Settings.from_env(), not args.no_db))
    except (KafkaError, OSError, TimeoutError) as exc:
        print(f"error: cannot read the cluster from Kafka: {exc!r}", file=sys.stderr)
        return 1
    if args.json:
        print(orjson.dumps(view, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode())
    else:
        print(format_view(view))
    # A topic with the wrong partition count strands work: scripts must not read it as healthy.
    return 1 if view["partition_problems"] else 0


async def _view(settings: Settings, use_db: bool) -> dict[str, Any]:
    pool = None
    if use_db:
        try:
            pool = await asyncio.wait_for(
                connect_pool(settings.namespace_database_url, min_size=1, max_size=1),
                DB_CONNECT_TIMEOUT_S,
            )
        except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
            print(f"note: no live counts, PostgreSQL unreachable: {exc!r}", file=sys.stderr)
    try:
        return await asyncio.wait_for(cluster_view(settings, pool), VIEW_TIMEOUT_S)
    finally:
        if pool is not None:
            await pool.close()


def format_view(view: dict[str, Any]) -> str:
    """The view as a readable summary, a worker table and a partition table."""
    live = view["live_executions"]
    lines = [
        f"namespace {view.get('namespace', 'default')}, "
        f"group {view['group']}: {view['state']}, {len(view['workers'])} worker(s), "
        f"lag {view['lag']}, live executions {'?' if live is None else live}",
        "",
        _table(
            ("WORKER", "HOST", "MEMBER", "PARTITIONS", "LAG", "LIVE"),
            [
                (w["client_id"], w["host"], w["member_id"][-12:],
                 f"{ranges(w['partitions'])} ({len(w['partitions'])})", w["lag"],
                 _unknown(w["live_executions"]))
                for w in view["workers"]
            ],
        ) if view["workers"] else "no workers in the group",
        f"unowned partitions: {ranges(view['unowned_partitions']) or 'none'}",
        *(
            [f"unserved partitions: {ranges(view['unserved_partitions'])} (no worker serves "
             "them: commands there never run)"]
            if view.get("unserved_partitions") else []
        ),
        *[f"PROBLEM: {problem}" for problem in view.get("partition_problems", [])],
        "",
        _table(
            ("PARTITION", "OWNER", "COMMITTED", "END", "LAG", "LIVE"),
            [
                (p["partition"], p["owner"] or "-", _unknown(p["committed"], "-"), p["end"],
                 p["lag"], _unknown(p["live_executions"]))
                for p in view["partitions"]
            ],
        ),
        "",
    ]  # fmt: skip
    mirror = view["mirror"]
    behind = ", ".join(f"p{p}: {n}" for p, n in sorted(mirror["behind"].items()))
    lines.append(
        f"mirror {mirror['group']}: {mirror['state']}, {len(mirror['members'])} member(s), "
        f"lag {mirror['lag']}" + (f" ({behind})" if behind else "")
    )
    return "\n".join(lines)


def _unknown(value: Any, mark: str = "?") -> Any:
    return mark if value is None else value


def _table(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> str:
    cells = [header, *[tuple(str(c) for c in row) for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    )


def ranges(parts: list[int]) -> str:
    """[0, 1, 2, 5, 7, 8] → "0-2,5,7-8"."""
    runs: list[list[int]] = []
    for p in sorted(parts):
        if runs and runs[-1][1] == p - 1:
            runs[-1][1] = p
        else:
            runs.append([p, p])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)
