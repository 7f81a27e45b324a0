"""Run the invoicing example against a running cluster (`bash scripts/cluster.sh` runs it).

    python -m examples.run_invoicing [--api http://127.0.0.1:8080]

1. schedules the month-end run for 06:00 on the 1st of every month, Madrid time
   (POST /schedules), and prints its next runs;
2. triggers it twice now (POST /schedules/NAME/trigger, overlap "allow"): two month-end
   executions whose invoices are child executions, each waiting for a signature from outside;
   one live invoice per customer, so the second run's invoices wait, queued;
3. plays the e-signature service: finds each invoice's completion token (its `StepPending`
   event) and completes it with the Python client, the first run's, which lets the second
   run's invoices in, then theirs; prints both totals;
4. deletes the schedule.
The API calls use the token in CEREBELUM_API_TOKEN (scripts/cluster.sh sets it).
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
from typing import Any

from cerebelum import Client, Settings

CUSTOMERS = [
    {"customer": "acme", "hours": 12, "rate": 95.0},
    {"customer": "globex", "hours": 3.5, "rate": 120.0},
    {"customer": "initech", "hours": 40, "rate": 80.0},
]


class Api:
    def __init__(self, base: str) -> None:
        self.base = base
        token = os.environ.get("CEREBELUM_API_TOKEN", "")
        self.headers = {"Content-Type": "application/json"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data, self.headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=10) as r:
                return json.load(r)
        except urllib.error.HTTPError as exc:
            raise SystemExit(f"{method} {path}: {exc.code} {exc.read().decode()[:300]}") from None

    def events(self, execution_id: str, wanted: str, timeout: float = 30) -> list[dict[str, Any]]:
        """The events (their data) of type `wanted` of the execution, once there is one (the
        mirror is a moment behind Kafka)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                rows = self.call("GET", f"/executions/{execution_id}/events")["events"]
                found = [row["data"] for row in rows if row["type"] == wanted]
                if found:
                    return found
            except SystemExit:
                pass  # 404 until the mirror has it
            time.sleep(0.3)
        raise SystemExit(f"no {wanted} for {execution_id} within {timeout:g} s")


async def main(base: str) -> int:
    api = Api(base)
    name = f"month-end-{uuid.uuid4().hex[:6]}"
    created = api.call("POST", "/schedules", {
        "name": name, "workflow": "month_end", "inputs": {"customers": CUSTOMERS},
        "cron": "0 6 1 * *", "timezone": "Europe/Madrid", "overlap": "allow",
    })  # fmt: skip
    print(f"scheduled {name}: next runs {', '.join(created['next_runs'])}")
    api.events(f"schedule.{name}", "TimerStarted")  # the schedule is live
    api.call("POST", f"/schedules/{name}/trigger", {})
    api.events(f"schedule.{name}", "ScheduleFired")
    api.call("POST", f"/schedules/{name}/trigger", {})  # a second run, e.g. a correction
    fired = []
    while len(fired) < 2:
        fired = api.events(f"schedule.{name}", "ScheduleFired")
        time.sleep(0.2)
    runs = [f["run"] for f in fired]
    print(f"triggered twice: {', '.join(runs)}, {len(CUSTOMERS)} invoices each, child executions")
    # One live invoice per customer (invoice's concurrency_key): the second run's wait.
    for k in range(len(CUSTOMERS)):
        invoice = f"{runs[1]}.invoices.{k}"
        api.events(invoice, "ExecutionQueued")
        row = api.call("GET", f"/executions/{invoice}")
        print(f"  {invoice}: {row['status']} on {row['queued']['limiter']}")
    results = []
    async with Client(Settings.from_env()) as client:
        await client.listen()
        for run in runs:  # the first run's signatures let the second run's invoices in
            for k, c in enumerate(CUSTOMERS):
                invoice = f"{run}.invoices.{k}"
                (pending,) = api.events(invoice, "StepPending")
                token = f"{invoice}/sign/{pending['token']}"
                await client.complete(token, {"signed_by": f"{c['customer']}-cfo"})
                print(f"  {invoice}: signed ({token})")
            results.append(await client.wait(run, timeout=60))
    for run, result in zip(runs, results, strict=True):
        print(f"{run}: {result.status} {json.dumps(result.output)}")
    api.call("DELETE", f"/schedules/{name}")
    print(f"deleted schedule {name}")
    return 0 if all(r.status == "completed" for r in results) else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api", default="http://127.0.0.1:8080")
    raise SystemExit(asyncio.run(main(parser.parse_args().api)))
