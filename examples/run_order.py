"""Run the order example against a running cluster and show where its history lands.

    python -m examples.run_order [--orders 5] [--api http://127.0.0.1:8080]

Starts orders through the Python client (which produces start-commands to Kafka), waits for
each to complete, then reads one back through the HTTP API (PostgreSQL, via the mirror) with
the token in CEREBELUM_API_TOKEN (a `read` scope is enough; scripts/cluster.sh sets it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
import urllib.error
import urllib.request
import uuid

from cerebelum import Client, Settings

ITEMS = [{"sku": "tea", "qty": 2, "price": 4.5}, {"sku": "cup", "qty": 1, "price": 12.0}]
PIANO = [{"sku": "piano", "qty": 1, "price": 2500.0}]


async def main(orders: int, api: str) -> int:
    async with Client(Settings.from_env()) as client:
        await client.listen()
        ids = []
        for i in range(orders):
            eid = f"order-{uuid.uuid4().hex[:8]}"
            # Every third order's payment provider is "down" twice: watch it retry.
            inputs = {
                "order_id": f"o-{i}",
                "items": ITEMS,
                "provider_down_attempts": 2 * (i % 3 == 0),
            }
            await client.start("order", inputs, eid)
            ids.append(eid)
            print(f"started {eid}")
        big = f"order-{uuid.uuid4().hex[:8]}"
        await client.start("order", {"order_id": "o-big", "items": PIANO}, big)
        print(f"started {big} (2500.00: waits for a manager's approval)")
        await asyncio.sleep(1)
        await client.signal(big, "approval", {"approved": True, "by": "manager"})
        print(f"approved {big}")
        ids.append(big)
        for eid in ids:
            result = await client.wait(eid, timeout=60)
            print(f"{eid}: {result.status} {json.dumps(result.output)}")
            if result.status != "completed":
                return 1
    return show_from_api(api, ids[-1])


def show_from_api(api: str, execution_id: str) -> int:
    """The mirror writes PostgreSQL a moment after Kafka: poll the API until the row is there."""
    token = os.environ.get("CEREBELUM_API_TOKEN", "")
    headers = {"Authorization": f"Bearer {token}"} if token else {}

    def get(path: str) -> urllib.request.Request:
        return urllib.request.Request(f"{api}{path}", headers=headers)

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(get(f"/executions/{execution_id}"), timeout=5) as r:
                row = json.load(r)
            if row.get("status") == "completed":
                with urllib.request.urlopen(get(f"/executions/{execution_id}/events")) as r:
                    events = json.load(r)["events"]
                print(f"GET {api}/executions/{execution_id} -> {json.dumps(row)}")
                print(f"{len(events)} events: " + " > ".join(e["type"] for e in events))
                return 0
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 403):  # no use waiting: the token is missing or too weak
                print(f"the API refused the token ({exc.code}): set CEREBELUM_API_TOKEN")
                return 1
        except OSError:
            pass
        time.sleep(0.5)
    print(f"the API did not show {execution_id} as completed within 30 s")
    return 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=5)
    parser.add_argument("--api", default="http://127.0.0.1:8080")
    args = parser.parse_args()
    raise SystemExit(asyncio.run(main(args.orders, args.api)))
