"""Bus subscribers: parse, then call a handler inside the inbox transaction."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import date
from typing import Annotated, Any

import structlog
from faststream.rabbit.annotations import RabbitMessage
from pydantic import BaseModel, Field, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

from orderflow import busaccess, refusals, topology
from orderflow.consumer import PermanentError, apply_once
from orderflow.db import Connection
from orderflow.messages import (
    EVENTS,
    OrderSubmitted,
    OrderWithdrawalRequested,
    Problem,
    SubmitOrder,
    SubmitOrderReply,
)
from orderflow.service import ServiceRuntime

from .. import domain, handlers
from ..adapters import repository
from ..adapters.blobs import BlobStore
from ..settings import Settings
from . import bus_files

log = structlog.get_logger(__name__)

COMMANDS_EXCHANGE = topology.exchange(topology.COMMANDS)
EVENTS_EXCHANGE = topology.exchange(topology.EVENTS)

# The queues consumed (and declared) here; the provisioning step declares every other, so
# `order.submitted` waits in the router's queue even before the router is first deployed.
QUEUES = busaccess.OWN_QUEUES["intake"]
#: The inbox consumer of `order.submit`.
COMMANDS_CONSUMER = "intake.commands"


@dataclass(frozen=True)
class DocumentedAs:
    """Pydantic metadata: the JSON schema of `model`, whatever the field accepts."""

    model: type[BaseModel]

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return handler(self.model.__pydantic_core_schema__)


#: The body of `order.submit`: any JSON object (the handler checks it), documented as the
#: command it must be.
SubmitOrderBody = Annotated[dict[str, Any], DocumentedAs(SubmitOrder), Field(title="SubmitOrder")]


def register(
    runtime: ServiceRuntime,
    *,
    today: Callable[[], date],
    decision_wait: Callable[[], float] = lambda: 20.0,
    settings: Callable[[], Settings],
    blobs: Callable[[], BlobStore],
) -> None:
    broker = runtime.broker

    async def applied(message_id: str | None) -> bool:
        return bool(message_id) and await repository.message_applied(
            runtime.pool, consumer=COMMANDS_CONSUMER, message_id=str(message_id)
        )

    @runtime.subscriber(topology.INTAKE_COMMANDS)
    async def submit_order(body: SubmitOrderBody, msg: RabbitMessage) -> None:
        """Create and submit an order sent by another system, or a new revision of one."""
        raw = msg.raw_message
        async with AsyncExitStack() as stack:
            refs = bus_files.references(body)
            if refs and await applied(raw.message_id):
                # a redelivery of a command done with: nothing is fetched again (its URL
                # may have expired), and the inbox finds it a duplicate
                refs = []
            rules = settings()
            try:
                files = await stack.enter_async_context(
                    bus_files.fetched(
                        refs,
                        policy=rules.outbound_policy,
                        limit=rules.max_attachment_bytes,
                        timeout=rules.fetch_timeout,
                    )
                )
            except PermanentError:
                if await applied(raw.message_id):
                    log.info("files not fetched for a command applied meanwhile")
                    return
                raise
            await _submit_order(body, msg, files)

    async def _submit_order(
        body: dict[str, Any], msg: RabbitMessage, files: list[handlers.NewFile]
    ) -> None:
        raw = msg.raw_message
        correlation_id = raw.correlation_id or raw.message_id
        order_id = handlers.command_order_id(body)

        async def effect(conn: Connection) -> None:
            day = today()
            try:
                # parsed here, not by the subscriber: a type error and the rules the rest
                # of the document breaks are refused together
                command = await handlers.submit_command(conn, body=body, today=day, files=files)
                await handlers.on_submit_command(
                    conn,
                    command=command,
                    today=day,
                    reply_to=raw.reply_to,
                    correlation_id=correlation_id,
                    user_id=raw.user_id,
                    files=files,
                    store=blobs(),
                )
            except domain.SelfCheckFailed as exc:
                raise PermanentError(
                    str(exc), problems=exc.problems, code=refusals.SELF_CHECK_FAILED
                ) from exc
            except domain.UnknownRevision as exc:
                raise PermanentError(
                    str(exc),
                    problems=[Problem(pointer="/revises", detail=str(exc))],
                    code=refusals.UNKNOWN_REVISION,
                ) from exc
            except (handlers.OrderNotFound, domain.RuleViolation) as exc:
                code = (
                    refusals.UNKNOWN_ORDER
                    if isinstance(exc, handlers.OrderNotFound)
                    else refusals.NOT_EDITABLE
                )
                raise PermanentError(
                    str(exc), problems=[Problem(pointer="/order_id", detail=str(exc))], code=code
                ) from exc

        async def attempt() -> None:
            await apply_once(runtime.pool, msg, consumer=COMMANDS_CONSUMER, effect=effect)

        try:
            if order_id is None:
                await attempt()
            else:
                # the lock is not held while waiting: the decision must be able to land
                await handlers.when_decided(
                    runtime.pool,
                    order_id=order_id,
                    seconds=decision_wait(),
                    attempt=attempt,
                )
        except domain.Conflict as exc:
            # answered, and the command done with: the sender reads the order and retries
            conflict = exc

            async def answer(conn: Connection) -> None:
                await handlers.reply_conflict(
                    conn,
                    conflict=conflict,
                    order_id=order_id,
                    reply_to=raw.reply_to,
                    correlation_id=correlation_id,
                )

            await apply_once(runtime.pool, msg, consumer=COMMANDS_CONSUMER, effect=answer)

    @runtime.subscriber(topology.INTAKE_PROJECTION)
    async def project_event(msg: RabbitMessage) -> None:
        """Keep the order read model and its timeline up to date with every event."""
        raw = msg.raw_message
        model = EVENTS.get(raw.type or "")
        if model is None:
            # events intake does not know yet (a newer service's) are not an error
            log.debug("event type not projected", message_type=raw.type)
            return
        event = model.model_validate_json(raw.body)

        async def effect(conn: Connection) -> None:
            await handlers.on_event(
                conn, event=event, message_id=str(raw.message_id), sent_at=raw.timestamp
            )

        await apply_once(runtime.pool, msg, consumer="intake.projection", effect=effect)

    # documentation of what the outbox publishes (AsyncAPI); publishing goes through the outbox
    broker.publisher(
        "",
        EVENTS_EXCHANGE,
        routing_key=OrderSubmitted.message_type,
        schema=OrderSubmitted,
        title="order.submitted",
        description=(
            "A revision passed the self-check and goes to review, with its files (references, "
            "never bytes) and what changed since the revision submitted before it."
        ),
        include_in_schema=True,
    )
    broker.publisher(
        "",
        EVENTS_EXCHANGE,
        routing_key=OrderWithdrawalRequested.message_type,
        schema=OrderWithdrawalRequested,
        title="order.withdrawal_requested",
        description=(
            "Someone asked to withdraw the order before approval. The review-router decides "
            "it against the round's decision and answers order.withdrawn or "
            "order.withdrawal_refused."
        ),
        include_in_schema=True,
    )
    broker.publisher(
        "reply_to",
        routing_key="reply_to",
        schema=SubmitOrderReply,
        title="order.submit.reply",
        description=(
            "The answer to an `order.submit` command with a `reply_to`, sent through the "
            "default exchange to that queue, with the command's correlation id: accepted "
            "with the order id, revision and status; refused with every problem; or, for a "
            "revision that met a conflict (another revision came first, or the departments' "
            "decision did not reach intake in time), not accepted with `retryable: true` and "
            "the order's current revision and status: read it again and send it again."
        ),
        include_in_schema=True,
    )
