"""A schedule, child workflows and external completion: month-end invoicing.

The month-end run is scheduled (`POST /schedules` or `cerebelum schedule create month-end
--workflow month_end --cron "0 6 1 * *" --timezone Europe/Madrid --inputs '{"customers": [...]}'`):
one execution per tick, exactly once.

`month_end` bills every customer as a child execution of `invoice` (a fan-out: each invoice is
an execution of its own, on its own partition, started exactly once inside the parent's
transaction), then totals what they billed. Each `invoice` waits for the customer's signature
from an outside e-signature service: its `sign` step hands the service a completion token and
returns `ctx.pending(...)`; the service completes it later (POST /completions, `cerebelum
complete`, Client.complete or a CompleteStep command on Kafka). A declined signature fails that
invoice, which fails the month-end node (its diverge rule could catch ChildFailed).

Limits: at most one invoice per customer is in flight at a time (`concurrency_key`: a second
one, from a manual re-run, waits as `queued` until the first ends), and booking calls the
accounting system at most 5 times per second across the cluster (`RateLimit`).

    python -m examples.run_invoicing      (against `bash scripts/cluster.sh`'s cluster)
"""

from __future__ import annotations

from typing import Any

from cerebelum import RateLimit, StepContext, Workflow, children, step

# Stands in for the e-signature service: the tokens it was handed, by customer.
SIGNATURE_REQUESTS: dict[str, str] = {}


@step
def draft(inputs: dict) -> dict:
    return {"customer": inputs["customer"], "amount": round(inputs["hours"] * inputs["rate"], 2)}


@step
def sign(ctx: StepContext, draft: dict) -> Any:
    # A real app would send ctx.completion_token to the e-signature service here.
    SIGNATURE_REQUESTS[draft["customer"]] = ctx.completion_token
    return ctx.pending(timeout=7 * 24 * 3600)


@step(rate_limit=RateLimit(5, per_s=1.0))  # the accounting system's quota, for all keys
def book(draft: dict, sign: dict) -> dict:
    return {**draft, "signed_by": sign["signed_by"]}


# One live invoice per customer; another waits, queued, in order.
invoice = Workflow("invoice", draft >> sign >> book, concurrency_key="customer")


@step
def total(invoices: list) -> dict:
    return {"invoices": len(invoices), "total": round(sum(i["amount"] for i in invoices), 2)}


month_end = Workflow(
    "month_end",
    children("invoice", each=lambda inputs: inputs["customers"], name="invoices") >> total,
)
