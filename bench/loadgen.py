"""The load generator: produce N start-commands to cerebelum.commands as fast as Kafka takes them.

Run by the benchmarks as its own process (bench.common.LoadGen), so its CPU is its own:

    python -m bench.loadgen --n 20000 --workflow w3 --prefix 0123abcd

Protocol on stdin/stdout: it connects and prints `ready`; on a `go` line it produces; when every
command is acknowledged it prints `done {json}` and waits for stdin to close before exiting.

The commands are the documented start-command (cerebelum.core.commands.start_command), keyed by
execution id. They are written into per-partition record batches (the partition is what Kafka's
default partitioner gives the key, murmur2 mod 64, as every client computes it) and handed to
one idempotent producer without waiting for any acknowledgement until the end: one batch costs
one request, not one round trip per command.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaProducer

from cerebelum.client.client import partition_for
from cerebelum.config import Settings
from cerebelum.constants import DEFAULT_NAMES, PARTITIONS
from cerebelum.core.commands import start_command

# 1 MiB batches (Kafka's default max.message.bytes) hold ~6,000 W3 start-commands: a 20k load
# is a few dozen requests.
MAX_BATCH_BYTES = 1024 * 1024
# Lingering is moot with explicit batches; 5 ms only groups the last, partial ones.
LINGER_MS = 5


def execution_id(prefix: str, i: int) -> str:
    """32 hex characters, as long as the uuid4().hex ids `Client.start` makes."""
    return f"{prefix[:16]:0>16}{i:016x}"


def inputs_for(workflow: str, i: int) -> Any:
    return {"n": i}


def make_producer(s: Settings, **kw: Any) -> AIOKafkaProducer:
    options: dict[str, Any] = {
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": LINGER_MS,
        "max_batch_size": MAX_BATCH_BYTES,
        "max_request_size": 8 * MAX_BATCH_BYTES,
    }
    options.update(kw)
    return AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap, **options)


async def produce_starts(
    producer: AIOKafkaProducer,
    n: int,
    workflow: str,
    prefix: str,
    inputs: Callable[[str, int], Any] = inputs_for,
) -> dict[str, float]:
    """Produce n start-commands; return when Kafka acknowledged them all (monotonic times)."""
    first = time.monotonic()
    batches: dict[int, Any] = {}
    pending: list[asyncio.Future[Any]] = []
    for i in range(n):
        eid = execution_id(prefix, i)
        key = eid.encode()
        value = start_command(eid, workflow, inputs(workflow, i))
        p = partition_for(eid, PARTITIONS)
        batch = batches.get(p)
        if batch is None:
            batch = batches[p] = producer.create_batch()
        if batch.append(key=key, value=value, timestamp=None) is None:  # full: ship it
            pending.append(await producer.send_batch(batch, DEFAULT_NAMES.commands, partition=p))
            batch = batches[p] = producer.create_batch()
            batch.append(key=key, value=value, timestamp=None)
    for p, batch in batches.items():
        if batch.record_count():
            pending.append(await producer.send_batch(batch, DEFAULT_NAMES.commands, partition=p))
    produced = time.monotonic()
    await asyncio.gather(*pending)
    return {"t_first": first, "t_produced": produced, "t_acked": time.monotonic()}


def _own_cpu() -> float:
    raw = open(f"/proc/{os.getpid()}/stat").read()
    f = raw[raw.rindex(")") + 2 :].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--workflow", default="w3")
    parser.add_argument("--prefix", required=True, help="hex prefix of the execution ids")
    args = parser.parse_args()
    s = Settings.from_env()
    producer = make_producer(s)
    await producer.start()
    await producer.client._wait_on_metadata(DEFAULT_NAMES.commands)  # no metadata fetch in the window
    print("ready", flush=True)
    line = await asyncio.to_thread(sys.stdin.readline)
    if line.strip() != "go":
        await producer.stop()
        return
    cpu0 = _own_cpu()
    times = await produce_starts(producer, args.n, args.workflow, args.prefix)
    times["cpu_s"] = _own_cpu() - cpu0
    times["n"] = args.n
    print("done " + json.dumps(times), flush=True)
    await asyncio.to_thread(sys.stdin.read)  # until the harness has read our CPU and closes stdin
    await producer.stop()


if __name__ == "__main__":
    asyncio.run(main())
