"""An order: validate it, reserve stock and charge the card at once, ask a manager to approve
large orders, then ship.

    cerebelum worker --app examples.order
    cerebelum start order --wait \
        --input '{"order_id": "o-1", "items": [{"sku": "tea", "qty": 2, "price": 4.5}]}'
    cerebelum signal ID approval --payload '{"approved": true, "by": "ana"}'  # totals over 1000

- `validate >> [reserve, charge]`: reserve and charge run concurrently; `review` waits for both.
- `charge` retries with exponential backoff (durable timers) when the payment provider is down.
- Orders up to 1000 skip the approval; larger ones wait up to a day for the `approval` signal,
  and a rejection fails the order.
"""

from __future__ import annotations

import asyncio

from cerebelum import (
    RetryPolicy,
    StepContext,
    StepError,
    Workflow,
    approval,
    branch,
    diverge,
    fail,
    skip_to,
    step,
)

APPROVAL_THRESHOLD = 1000


class PaymentUnavailable(Exception):
    """The payment provider did not answer: worth retrying."""


@step
def validate(inputs: dict) -> dict:
    items = inputs.get("items") or []
    if not items:
        raise StepError("an order needs at least one item")
    total = round(sum(i["qty"] * i["price"] for i in items), 2)
    return {"order_id": inputs["order_id"], "total": total, "lines": len(items)}


@step
async def reserve(validate: dict) -> dict:
    await asyncio.sleep(0)  # a real step would call the inventory service here
    return {"reservation": f"r-{validate['order_id']}", "lines": validate["lines"]}


@step(retry=RetryPolicy(max_attempts=5, initial_interval=0.2, backoff=2.0, max_interval=5.0))
async def charge(ctx: StepContext, inputs: dict, validate: dict) -> dict:
    # Test hook: the provider is "down" for the first `provider_down_attempts` attempts.
    if ctx.attempt <= inputs.get("provider_down_attempts", 0):
        raise PaymentUnavailable(f"payment provider unavailable (attempt {ctx.attempt})")
    # The idempotency key is stable across retries: the provider charges once.
    return {"charged": validate["total"], "payment_ref": f"pay-{ctx.idempotency_key}"}


@step
def review(validate: dict) -> dict:
    return {"needs_approval": validate["total"] > APPROVAL_THRESHOLD}


@step
def ship(validate: dict, reserve: dict, charge: dict, approval: dict | None) -> dict:
    return {
        "order_id": validate["order_id"],
        "status": "shipped",
        "reservation": reserve["reservation"],
        "paid": charge["charged"],
        "approved_by": (approval or {}).get("by", "auto"),
    }


order = Workflow(
    "order",
    validate >> [reserve, charge] >> review >> approval("approval", timeout=24 * 3600) >> ship,
    rules=[
        branch(review, when=lambda r: not r["needs_approval"], then=skip_to(ship)),
        diverge("approval", when=lambda r: not r.get("approved"), then=fail("order rejected")),
    ],
)
