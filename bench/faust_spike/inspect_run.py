"""After a run: which executions of a run never completed, and what each topic holds for them.

    .venv/bin/python bench/faust_spike/inspect_run.py RUN_ID [--engine faust|cerebelum]

Reads (to their current end) the commands topic, the events topic (read_committed) and the
state topic / faust table changelog, both read_committed and read_uncommitted, and prints per
missing execution: its partition, its commands, its committed events, and its last snapshot in
each isolation level. Shows whether state that a reader must never see (aborted writes) is
what a restore picked up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections import defaultdict
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

TOPICS = {
    "faust": ("spike.commands", "spike.events", "spike-faust-executions-changelog"),
    "cerebelum": ("cerebelum.commands", "cerebelum.events", "cerebelum.state"),
}


async def read_all(bootstrap: str, topic: str, isolation: str) -> list[Any]:
    c = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, isolation_level=isolation,
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )
    await c.start()
    try:
        parts = c.partitions_for_topic(topic) or set()
        if not parts:
            await c._client.force_metadata_update()
            parts = c.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        ends = await c.end_offsets(tps)
        out: list[Any] = []
        remaining = {tp for tp in tps if ends[tp] > 0}
        while remaining:
            batch = await c.getmany(timeout_ms=1000, max_records=50_000)
            for tp, recs in batch.items():
                out.extend(recs)
            for tp in list(remaining):
                if await c.position(tp) >= ends[tp]:
                    remaining.discard(tp)
        return out
    finally:
        await c.stop()


async def main(args: argparse.Namespace) -> None:
    commands, events, state = TOPICS[args.engine]
    prefix = f"{args.run_id}-x-"
    started: dict[str, int] = {}
    cmds: dict[str, list[str]] = defaultdict(list)
    for r in await read_all(args.bootstrap, commands, "read_committed"):
        key = (r.key or b"").decode()
        if key.startswith(prefix):
            body = orjson.loads(r.value)
            cmds[key].append(f"{body.get('type')}{'' if 'step' not in body else ':' + str(body['step'])}@{r.offset}")
            started[key] = r.partition
    evs: dict[str, list[str]] = defaultdict(list)
    for r in await read_all(args.bootstrap, events, "read_committed"):
        key = (r.key or b"").decode()
        if key.startswith(prefix):
            e = orjson.loads(r.value)
            evs[key].append(f"v{e.get('version')}:{e.get('type')}{':' + e['step'] if 'step' in e else ''}")
    completed = {k for k, v in evs.items() if any("ExecutionCompleted" in x for x in v)}
    missing = sorted(set(started) - completed)
    snaps: dict[str, dict[str, Any]] = {"read_committed": {}, "read_uncommitted": {}}
    counts: dict[str, dict[str, int]] = {"read_committed": defaultdict(int), "read_uncommitted": defaultdict(int)}
    for iso in snaps:
        for r in await read_all(args.bootstrap, state, iso):
            key = (r.key or b"").decode()
            if key in missing:
                counts[iso][key] += 1
                snaps[iso][key] = None if r.value is None else orjson.loads(r.value)
    by_partition: dict[int, int] = defaultdict(int)
    for k in missing:
        by_partition[started[k]] += 1

    def brief(s: Any) -> Any:
        if not isinstance(s, dict):
            return s
        return {k: s.get(k) for k in ("status", "cursor", "version")}

    report = {
        "run_id": args.run_id,
        "started": len(started),
        "completed": len(completed),
        "missing": len(missing),
        "missing_by_partition": dict(sorted(by_partition.items())),
        "examples": [
            {
                "id": k,
                "partition": started[k],
                "commands": cmds[k],
                "committed_events": evs.get(k, []),
                "state_records_committed": counts["read_committed"].get(k, 0),
                "state_records_uncommitted": counts["read_uncommitted"].get(k, 0),
                "last_state_committed": brief(snaps["read_committed"].get(k)),
                "last_state_uncommitted": brief(snaps["read_uncommitted"].get(k)),
            }
            for k in missing[: args.examples]
        ],
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("run_id")
    p.add_argument("--engine", default="faust", choices=list(TOPICS))
    p.add_argument("--bootstrap", default="127.0.0.1:29092")
    p.add_argument("--examples", type=int, default=5)
    asyncio.run(main(p.parse_args()))
