"""The app the dashboard tests serve with ``conveyor dev``: one function per kind of run a
page must show. The database comes from ``$CONVEYOR_DATABASE_URL``; ``$DEMO_FLAG`` (or the
event's ``data.flag``) names the file whose existence lets ``sync-inventory`` succeed (until
then it is a dead letter).

* ``process-order`` (``order.placed``): four steps, a durable sleep, a step that succeeds on
  its second attempt, and ``ctx.log`` lines; completes.
* ``render-report`` (``report.requested``): its second step raises; the run fails.
* ``score-batch`` (``batch.requested``): a parent that maps ``score-item`` over
  ``data.n`` items; items divisible by 5 fail, so the parent shows failed children (it
  goes on with ``allow_failures``) and completes.
* ``sync-inventory`` (``inventory.sync``): fails until the flag file exists; redriving it
  then completes it.
* ``nap`` (``nap.requested``): sleeps for an hour: a run that is still going, to cancel.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import conveyor
from conveyor import Context, NonRetriableError

app = conveyor.Conveyor("dashboard-demo", backoff=conveyor.Backoff(base=0.01, cap=0.05))


def price(items: list[dict[str, Any]]) -> dict[str, Any]:
    total = sum(i["qty"] * i["unit"] for i in items)
    return {"subtotal": total, "tax": round(total * 0.2, 2), "currency": "EUR"}


@app.function(on="order.placed", retries=1)
async def process_order(ctx: Context) -> dict[str, Any]:
    order = ctx.event.data
    ctx.log.info("processing order %s for %s", order["order_id"], order["customer"])
    checked = await ctx.step.run("validate-order", lambda: {"ok": True, "items": len(order["items"])})
    amount = await ctx.step.run("price-order", price, order["items"])
    ctx.log.info("priced at %s %s", amount["subtotal"] + amount["tax"], amount["currency"])
    await ctx.step.sleep("wait-for-settlement", timedelta(milliseconds=400))
    def send_receipt() -> str:
        if ctx.attempt == 0:  # the mail server refuses the first try: the step is retried
            raise RuntimeError("SMTP 451: try again later")
        return f"receipt-{order['order_id']}"

    receipt = await ctx.step.run("send-receipt", send_receipt)
    ctx.log.warning("receipt %s sent without a tracking number", receipt)
    return {"order_id": order["order_id"], "items": checked["items"], "charged": amount, "receipt": receipt}


def render_pdf(template: str) -> str:
    raise ValueError(f"template {template!r} is missing a 'totals' block")


@app.function(on="report.requested", retries=0)
def render_report(ctx: Context) -> str:
    rows = ctx.step.run("load-rows", lambda: [{"region": "north", "sales": 12}, {"region": "south", "sales": 7}])
    ctx.log.info("loaded %d rows", len(rows))
    return str(ctx.step.run("render-pdf", render_pdf, ctx.event.data.get("template", "monthly")))


@app.function(retries=0)
def score_item(ctx: Context) -> int:
    item = int(ctx.event.data)
    if item % 5 == 0:
        raise NonRetriableError(f"item {item} has no credit history")
    return item * 3


@app.function(on="batch.requested", retries=0)
def score_batch(ctx: Context) -> dict[str, Any]:
    items = ctx.step.run("list-items", lambda: list(range(1, int(ctx.event.data["n"]) + 1)))
    scores = ctx.step.map("score-items", score_item, items, allow_failures=True)
    failures = len(scores.failures())
    total = ctx.step.run("report", lambda: sum(s for s in scores if s is not None))
    return {"scored": len(items) - failures, "failed": failures, "total": total}


def push_inventory(flag: str) -> str:
    if not Path(flag).exists():
        raise RuntimeError("the warehouse API answered 503 Service Unavailable")
    return "pushed"


@app.function(on="inventory.sync", retries=0)
def sync_inventory(ctx: Context) -> str:
    ctx.step.run("fetch-stock", lambda: {"sku-1": 4, "sku-2": 0})
    return str(ctx.step.run("push-stock", push_inventory, ctx.event.data.get("flag") or os.environ["DEMO_FLAG"]))


@app.function(on="nap.requested", retries=0)
def nap(ctx: Context) -> str:
    ctx.step.run("lie-down", lambda: "zzz")
    ctx.step.sleep("sleep", timedelta(hours=1))
    return "rested"
