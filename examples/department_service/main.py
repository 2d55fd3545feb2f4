"""A small department system for Orderflow: it reviews the orders of one department.

It consumes the department's queue `review.<department>`, checks each order against two
simple rules, posts its remarks as annotations (`review.annotation`) while reviewing, and
then gives its verdict (`review.verdict`), both on the exchange `orderflow.verdicts` with
the department as routing key and the AMQP `user_id` of its own RabbitMQ user, which the
broker checks. It needs only aio-pika and the standard library: everything it knows of
Orderflow is the message format in docs/integration.md.

    uv run python examples/department_service/main.py \\
        --amqp-url amqp://dept-finance:PASSWORD@127.0.0.1:5672/orderflow \\
        --department finance --max-settlement-days 45 --max-total 500000

Rules (a department would have its own): the payment's settlement period at most
`--max-settlement-days`, the order's total at most `--max-total`. An order that breaks a
rule gets an annotation on the field and a request for changes; any other is approved.
Stop it with Ctrl-C (SIGINT) or SIGTERM: the review in hand is finished first.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import uuid
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import unquote, urlsplit

import aio_pika
from aio_pika.abc import AbstractExchange, AbstractIncomingMessage

log = logging.getLogger("department-service")

VERDICTS = "orderflow.verdicts"


def remarks(
    request: dict[str, Any], *, max_settlement_days: int, max_total: Decimal
) -> list[dict[str, str]]:
    """The department's rules: one annotation for each the order breaks."""
    found = []
    days = (request["order"].get("payment") or {}).get("settlement_days")
    if days is not None and days > max_settlement_days:
        found.append(
            {
                "field": "/payment/settlement_days",
                "message": (
                    f"Settlement in {days} days; at most {max_settlement_days} without approval"
                ),
                "severity": "blocker",
            }
        )
    try:
        total = Decimal(request["totals"]["total"])
    except (KeyError, InvalidOperation):
        total = None
    if total is not None and total > max_total:
        found.append(
            {
                "field": "/lines",
                "message": f"Total {total} {request['totals']['currency']} is above {max_total}",
                "severity": "major",
            }
        )
    return found


class DepartmentService:
    def __init__(
        self,
        *,
        amqp_url: str,
        department: str,
        reviewer_id: str,
        max_settlement_days: int,
        max_total: Decimal,
    ) -> None:
        self.amqp_url = amqp_url
        self.department = department
        self.reviewer = {"id": reviewer_id, "name": f"{department} review system"}
        self.max_settlement_days = max_settlement_days
        self.max_total = max_total
        # RabbitMQ checks user_id against the user we connect as; the router refuses
        # verdicts without it
        user = urlsplit(amqp_url).username
        if not user:
            raise SystemExit("--amqp-url must name the department's RabbitMQ user")
        self.user_id = unquote(user)
        self.verdicts: AbstractExchange | None = None
        # one review at a time; stopping waits for the one in hand
        self.busy = asyncio.Lock()

    async def publish(self, message_type: str, body: dict[str, Any], message_id: uuid.UUID) -> None:
        assert self.verdicts is not None
        await self.verdicts.publish(
            aio_pika.Message(
                json.dumps(body, ensure_ascii=False).encode(),
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                # derived from the review: sent again after a crash, it is applied once
                message_id=str(message_id),
                correlation_id=body["order_id"],
                type=message_type,
                user_id=self.user_id,
            ),
            routing_key=self.department,
            mandatory=True,  # with publisher confirms: raises if the broker did not take it
        )

    async def review(self, request: dict[str, Any]) -> str:
        review_id = request["review_id"]
        about = {
            "review_id": review_id,
            "order_id": request["order_id"],
            "revision": request["revision"],
            "department": self.department,
        }
        found = remarks(
            request, max_settlement_days=self.max_settlement_days, max_total=self.max_total
        )
        if found:
            # remarks while reviewing (a person would post them one by one as they read);
            # they reach the salesperson with the change request
            await self.publish(
                "review.annotation",
                {**about, "reviewer": self.reviewer, "annotations": found},
                uuid.uuid5(uuid.NAMESPACE_URL, f"{review_id}/annotation"),
            )
        decision = "request_changes" if found else "approve"
        await self.publish(
            "review.verdict",
            {
                **about,
                "decision": decision,
                "reviewer": self.reviewer,
                "comment": "See the annotations" if found else "Within the department's limits",
                # the verdict repeats them: the router may handle the verdict before an
                # annotation sent just ahead of it, and lists each remark once
                "annotations": found,
            },
            uuid.uuid5(uuid.NAMESPACE_URL, f"{review_id}/verdict"),
        )
        return decision

    async def handle(self, message: AbstractIncomingMessage) -> None:
        async with self.busy:
            await self._handle(message)

    async def _handle(self, message: AbstractIncomingMessage) -> None:
        if message.type == "review.cancelled":
            body = json.loads(message.body)
            log.info("review %s cancelled: %s", body["review_id"], body["reason"])
            await message.ack()
            return
        if message.type != "review.requested":
            log.warning("unexpected message type %r, left in the dead-letter queue", message.type)
            await message.reject(requeue=False)
            return
        request = json.loads(message.body)
        try:
            decision = await self.review(request)
        except Exception:
            # not confirmed by the broker: the request comes back and is reviewed again
            log.exception("verdict not sent for review %s", request["review_id"])
            await message.nack(requeue=True)
            return
        await message.ack()  # only once the verdict is confirmed
        print(
            json.dumps(
                {
                    "review_id": request["review_id"],
                    "order_id": request["order_id"],
                    "revision": request["revision"],
                    "decision": decision,
                }
            ),
            flush=True,
        )

    async def run(self, stop: asyncio.Event) -> None:
        connection = await aio_pika.connect_robust(
            self.amqp_url, client_properties={"connection_name": f"department-{self.department}"}
        )
        async with connection:
            publishing = await connection.channel(publisher_confirms=True, on_return_raises=True)
            # a department's user may declare nothing: the bus set-up and the router declared both
            self.verdicts = await publishing.get_exchange(VERDICTS, ensure=False)
            consuming = await connection.channel()
            await consuming.set_qos(prefetch_count=10)
            queue = await consuming.get_queue(f"review.{self.department}", ensure=False)
            tag = await queue.consume(self.handle)
            log.info("reviewing for %s as RabbitMQ user %s", self.department, self.user_id)
            await stop.wait()
            await queue.cancel(tag)
            async with self.busy:
                log.info("stopped")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--amqp-url", required=True, help="with the department's own user")
    parser.add_argument("--department", required=True, help="e.g. finance")
    parser.add_argument("--reviewer-id", default=None, help="default: <department>.system")
    parser.add_argument("--max-settlement-days", type=int, default=60)
    parser.add_argument("--max-total", type=Decimal, default=Decimal("1000000"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    service = DepartmentService(
        amqp_url=args.amqp_url,
        department=args.department,
        reviewer_id=args.reviewer_id or f"{args.department}.system",
        max_settlement_days=args.max_settlement_days,
        max_total=args.max_total,
    )

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await service.run(stop)

    asyncio.run(serve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
