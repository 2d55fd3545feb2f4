"""Bus subscribers: parse, then call a handler inside the inbox transaction."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import date
from functools import partial
from typing import Any

import structlog

from orderflow import busaccess, refusals, topology
from orderflow.consumer import Delivery, PermanentError
from orderflow.db import Connection
from orderflow.messages import EVENTS, Message, Problem, SubmitOrderReply
from orderflow.service import ServiceRuntime

from .. import domain, handlers
from ..adapters import repository
from ..adapters.blobs import BlobStore
from ..settings import Settings
from . import bus_files

log = structlog.get_logger(__name__)

# The queues consumed (and declared) here; the provisioning step declares every other, so
# `order.submitted` waits in the router's queue even before the router is first deployed.
QUEUES = busaccess.OWN_QUEUES["intake"]
#: The inbox consumer of `order.submit`: its queue's name, as for every subscriber.
COMMANDS_CONSUMER = topology.INTAKE_COMMANDS.name


def submit_refused(refused: refusals.Refused, _: refusals.RefusedMessage) -> Message:
    """What the sender of a refused `order.submit` gets on its `reply_to`."""
    return SubmitOrderReply(
        accepted=False, code=refused.code, reason=refused.reason, problems=list(refused.problems)
    )


@dataclass(frozen=True)
class _Commands:
    """What the `order.submit` subscriber reads at each delivery (settings and the blob
    store are read late, so a test can change them between messages)."""

    runtime: ServiceRuntime
    today: Callable[[], date]
    decision_wait: Callable[[], float]
    settings: Callable[[], Settings]
    blobs: Callable[[], BlobStore]

    async def applied(self, message_id: str | None) -> bool:
        return bool(message_id) and await repository.message_applied(
            self.runtime.pool, consumer=COMMANDS_CONSUMER, message_id=str(message_id)
        )

    async def submit_order(self, body: dict[str, Any], delivery: Delivery) -> None:
        """Create and submit an order sent by another system, or a new revision of one."""
        async with AsyncExitStack() as stack:
            refs = bus_files.references(body)
            if refs and await self.applied(delivery.message_id):
                # a redelivery of a command done with: nothing is fetched again (its URL
                # may have expired), and the inbox finds it a duplicate
                refs = []
            rules = self.settings()
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
                if await self.applied(delivery.message_id):
                    log.info("files not fetched for a command applied meanwhile")
                    return
                raise
            await self.submit_fetched(body, delivery, files)

    async def submit_fetched(
        self, body: dict[str, Any], delivery: Delivery, files: list[handlers.NewFile]
    ) -> None:
        """The command with its files at hand: applied once; a revision of an order under
        review waits for the decision; a conflict is answered and the command done with."""
        order_id = handlers.command_order_id(body)

        async def attempt() -> None:
            await delivery.apply_once(
                lambda conn: self.apply_command(conn, body=body, delivery=delivery, files=files)
            )

        try:
            if order_id is None:
                await attempt()
            else:
                # the lock is not held while waiting: the decision must be able to land
                await handlers.when_decided(
                    self.runtime.pool,
                    order_id=order_id,
                    seconds=self.decision_wait(),
                    attempt=attempt,
                )
        except domain.Conflict as exc:
            # answered, and the command done with: the sender reads the order and retries
            await delivery.apply_once(
                partial(
                    handlers.reply_conflict,
                    conflict=exc,
                    order_id=order_id,
                    reply_to=delivery.reply_to,
                    correlation_id=_correlation_id(delivery),
                )
            )

    async def apply_command(
        self,
        conn: Connection,
        *,
        body: dict[str, Any],
        delivery: Delivery,
        files: list[handlers.NewFile],
    ) -> None:
        """Inside the inbox transaction: parse the command, then create or revise."""
        day = self.today()
        try:
            # parsed here, not by the subscriber: a type error and the rules the rest
            # of the document breaks are refused together
            command = await handlers.submit_command(conn, body=body, today=day, files=files)
            await handlers.on_submit_command(
                conn,
                command=command,
                today=day,
                reply_to=delivery.reply_to,
                correlation_id=_correlation_id(delivery),
                user_id=delivery.user_id,
                files=files,
                store=self.blobs(),
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


def _correlation_id(delivery: Delivery) -> str | None:
    return delivery.correlation_id or delivery.message_id


async def project_event(conn: Connection, event: Message, delivery: Delivery) -> None:
    """Keep the order read model and its timeline up to date with every event."""
    await handlers.on_event(
        conn, event=event, message_id=delivery.message_id, sent_at=delivery.timestamp
    )


def register(
    runtime: ServiceRuntime,
    *,
    today: Callable[[], date],
    decision_wait: Callable[[], float] = lambda: 20.0,
    settings: Callable[[], Settings],
    blobs: Callable[[], BlobStore],
) -> None:
    commands = _Commands(
        runtime=runtime,
        today=today,
        decision_wait=decision_wait,
        settings=settings,
        blobs=blobs,
    )
    runtime.consume_in_steps(topology.INTAKE_COMMANDS, commands.submit_order, reply=submit_refused)
    # every event, by its type; events intake does not know yet (a newer service's) are
    # not an error
    runtime.consume_each(
        topology.INTAKE_PROJECTION,
        {model: project_event for model in EVENTS.values()},
        ignore_unknown=True,
    )
