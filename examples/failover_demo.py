"""The examples with a worker killed mid-way (needs `bash scripts/cluster.sh` running).

    python -m examples.failover_demo [--orders 30]

Starts orders (some with a flaky payment provider, some large enough to need approval) and
polling jobs, kills -9 one of the cluster's workers while they run, approves the large orders
after the kill, and waits for every execution: the survivors pick up the dead worker's
partitions from the log and finish its executions.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import time
import uuid
from pathlib import Path

from cerebelum import Client, Settings

RUN_DIR = Path(__file__).resolve().parents[1] / ".dev" / "cluster"
SMALL = [{"sku": "tea", "qty": 2, "price": 4.5}]
LARGE = [{"sku": "piano", "qty": 1, "price": 2500.0}]


async def main(orders: int, victim: str) -> int:
    run = uuid.uuid4().hex[:6]
    started = time.monotonic()
    async with Client(Settings.from_env()) as client:
        await client.listen()
        ids: dict[str, str] = {}
        for i in range(orders):
            large = i % 5 == 0
            eid = f"demo-{run}-order-{i}"
            inputs = {
                "order_id": f"o-{i}",
                "items": LARGE if large else SMALL,
                "provider_down_attempts": 2 if i % 3 == 0 else 0,
            }
            await client.start("order", inputs, eid)
            ids[eid] = "order (needs approval)" if large else "order"
        for i in range(orders // 3):
            eid = f"demo-{run}-poll-{i}"
            await client.start("poll_job", {"job": f"j-{i}", "ready_after": 4}, eid)
            ids[eid] = "poll_job"
        print(f"started {len(ids)} executions")

        await asyncio.sleep(0.7)  # retries back off, polls sleep, large orders wait
        pid = int((RUN_DIR / f"{victim}.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        print(f"kill -9 {victim} (pid {pid}) at +{time.monotonic() - started:.1f}s")

        for eid, kind in ids.items():
            if kind == "order (needs approval)":
                await client.signal(eid, "approval", {"approved": True, "by": "manager"})
        print("approved the large orders (after the kill)")

        results = await asyncio.gather(*(client.wait(eid, timeout=120) for eid in ids))
    by_status: dict[str, int] = {}
    for r in results:
        by_status[r.status] = by_status.get(r.status, 0) + 1
    print(f"all ended after {time.monotonic() - started:.1f}s: {by_status}")
    return 0 if by_status == {"completed": len(ids)} else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=30)
    parser.add_argument("--victim", default="worker-1", help="which cluster worker to kill")
    args = parser.parse_args()
    raise SystemExit(asyncio.run(main(args.orders, args.victim)))
