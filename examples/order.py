"""An order: validate it, reserve the stock, charge the card, ship it.

    cerebelum worker --app examples.order
    cerebelum start order --input '{"order_id": "o-1", "items": [{"sku": "tea", "qty": 2, "price": 4.5}]}' --wait
"""

from __future__ import annotations

import asyncio

from cerebelum import StepContext, StepError, Workflow, step


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


@step
async def charge(ctx: StepContext, validate: dict) -> dict:
    # The idempotency key is stable across retries: the payment provider charges once.
    return {"charged": validate["total"], "payment_ref": f"pay-{ctx.idempotency_key}"}


@step
def ship(validate: dict, reserve: dict, charge: dict) -> dict:
    return {
        "order_id": validate["order_id"],
        "status": "shipped",
        "reservation": reserve["reservation"],
        "paid": charge["charged"],
    }


order = Workflow("order", validate >> reserve >> charge >> ship)
