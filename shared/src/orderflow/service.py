"""The running parts every service has: pool, migrations, publisher, its own queues, outbox
relay and the faststream broker, started and stopped in order by the FastAPI lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import structlog
from faststream.middlewares import AckPolicy
from faststream.rabbit import Channel, RabbitBroker

from . import busaccess, consumer, refusals, topology
from .auth import store as auth_store
from .consumer import ReliableConsumer, RetryPolicy
from .db import Pool, create_pool, migrate
from .messages import Message, Problem
from .outbox import OutboxRelay
from .publisher import Publisher
from .settings import ServiceSettings

log = structlog.get_logger(__name__)


class ServiceRuntime:
    """Built at the composition root; connects only in `lifespan()`, never at import."""

    def __init__(
        self,
        *,
        service: str,
        schema: str,
        package: str,
        settings: ServiceSettings,
        queues: Sequence[topology.QueueSpec] | Callable[[], Sequence[topology.QueueSpec]] = (),
        retry_policy: RetryPolicy | None = None,
        outside_producers: Mapping[str, Iterable[str]] | None = None,
        declares_dead_letter_queues: bool = False,
    ) -> None:
        self.service = service
        self.schema = schema
        self.package = package
        self.settings = settings
        self._queues = queues
        self._declares_dlqs = declares_dead_letter_queues
        users = busaccess.service_users(settings.orderflow_bus_users)
        #: who may have sent what this service consumes (checked by ReliableConsumer)
        self.trust = busaccess.Trust(
            own_user=settings.bus_user,
            service_users=users,
            outside={t: frozenset(u) for t, u in (outside_producers or {}).items()},
        )
        #: queue -> the message types its subscriber takes (None: any event)
        self.accepts: dict[str, tuple[str, ...] | None] = {}
        #: queue -> the refusal reply its subscriber was given (else `refusals.reply_for`)
        self.replies: dict[str, refusals.ReplyBuilder] = {}
        self._consumed: set[str] = set()
        self._pool: Pool | None = None
        self._publisher: Publisher | None = None
        self.relay: OutboxRelay | None = None
        self.broker = RabbitBroker(
            settings.broker_url,
            app_id=service,
            graceful_timeout=settings.graceful_timeout,
            default_channel=Channel(prefetch_count=settings.prefetch),
            middlewares=[ReliableConsumer.factory(self, retry_policy)],
            # no fast_depends: each subscriber parses its body with its model itself, so a
            # message costs no dependency resolution (and no thread hop for `Context`)
            apply_types=False,
            reconnect_interval=2.0,
            log_level=logging.DEBUG,  # one line per message only when asked for
            # a logger of ours, so its lines pass the redaction of orderflow.logging
            logger=logging.getLogger(f"orderflow.broker.{service}"),
        )

    # --- the consume path: one subscriber per queue of the topology ---------------------

    def consume(
        self,
        spec: topology.QueueSpec,
        handler: consumer.Handler,
        *,
        model: Any = None,
        reply: refusals.ReplyBuilder | None = None,
        check_producer: bool = True,
    ) -> None:
        """Consume `spec` with `handler(conn, message, delivery)`, run inside the inbox
        transaction keyed by the queue's name (a redelivery does nothing). `message` is the
        body parsed as `model`, by default the annotation of the handler's second parameter.
        `reply` builds what a refused message's sender gets on `reply_to` (default
        `refusals.reply_for`). The producer is checked against the contract before the body
        is read; `check_producer=False` is for a queue of no contract (a test's probe)."""
        parse = consumer.body_parser(model if model is not None else consumer.model_of(handler, 1))

        async def call(msg: Any) -> None:
            message = parse(msg.body)
            delivery = self._delivery(spec, msg)
            await delivery.apply_once(lambda conn: handler(conn, message, delivery))

        self._subscribe(spec, call, handler, reply=reply, check_producer=check_producer)

    def consume_each(
        self,
        spec: topology.QueueSpec,
        routes: Mapping[type[Message], consumer.Handler],
        *,
        ignore_unknown: bool = False,
        reply: refusals.ReplyBuilder | None = None,
        check_producer: bool = True,
    ) -> None:
        """Consume a queue that carries several message types, told apart by the AMQP
        `type`: each model's handler, as in `consume`. A type not in `routes` is refused
        (`unexpected_type`), or with `ignore_unknown` acknowledged and left alone (an event
        of a newer service on a `#` queue), without an inbox row."""
        parsers = {m.message_type: (consumer.body_parser(m), h) for m, h in routes.items()}
        known = ", ".join(parsers)

        async def call(msg: Any) -> None:
            kind = msg.raw_message.type
            route = parsers.get(kind or "")
            if route is None:
                if ignore_unknown:
                    log.debug("message type not handled", queue=spec.name, message_type=kind)
                    return
                raise consumer.PermanentError(
                    f"unknown message type {kind!r} on {spec.exchange}: expected one of {known}",
                    [Problem(pointer="", detail=f"the AMQP type must be one of {known}")],
                    code=refusals.UNEXPECTED_TYPE,
                )
            parse, handler = route
            message = parse(msg.body)
            delivery = self._delivery(spec, msg)
            await delivery.apply_once(lambda conn: handler(conn, message, delivery))

        self._subscribe(spec, call, None, reply=reply, check_producer=check_producer)

    def consume_in_steps(
        self,
        spec: topology.QueueSpec,
        handler: consumer.StepsHandler,
        *,
        model: Any = None,
        reply: refusals.ReplyBuilder | None = None,
        check_producer: bool = True,
    ) -> None:
        """As `consume`, for a handler that must work outside the transaction first (fetch
        files, wait for a decision): `handler(message, delivery)` opens its transaction
        with `delivery.apply_once(effect)`, claimed in the same inbox."""
        parse = consumer.body_parser(model if model is not None else consumer.model_of(handler, 0))

        async def call(msg: Any) -> None:
            message = parse(msg.body)
            await handler(message, self._delivery(spec, msg))

        self._subscribe(spec, call, handler, reply=reply, check_producer=check_producer)

    def _delivery(self, spec: topology.QueueSpec, msg: Any) -> consumer.Delivery:
        return consumer.delivery_of(msg, queue=spec.name, pool=self.pool, trust=self.trust)

    def _subscribe(
        self,
        spec: topology.QueueSpec,
        call: Callable[[Any], Awaitable[None]],
        handler: Callable[..., Any] | None,
        *,
        reply: refusals.ReplyBuilder | None,
        check_producer: bool,
    ) -> None:
        if spec.name in self._consumed:
            raise ValueError(f"{spec.name} is consumed already: one subscriber per queue")
        self._consumed.add(spec.name)
        if check_producer:
            self.accepts[spec.name] = busaccess.accepted_types(spec)
        if reply is not None:
            self.replies[spec.name] = reply
        # named after the handler (or the queue), for faststream's log lines
        call.__name__ = call.__qualname__ = getattr(handler, "__name__", spec.name)
        self.broker.subscriber(
            spec.rabbit_queue(),
            topology.exchange(spec.exchange),
            ack_policy=AckPolicy.MANUAL,  # ReliableConsumer acknowledges after the commit
            no_reply=True,  # replies go through the outbox, never back from the handler
            decoder=consumer.as_is,  # the body is parsed once, by the model, in `call`
        )(call)

    @property
    def queues(self) -> Sequence[topology.QueueSpec]:
        return self._queues() if callable(self._queues) else self._queues

    @property
    def pool(self) -> Pool:
        if self._pool is None:
            raise RuntimeError(f"{self.service} is not started: no database pool")
        return self._pool

    @property
    def publisher(self) -> Publisher:
        if self._publisher is None:
            raise RuntimeError(f"{self.service} is not started: no publisher")
        return self._publisher

    async def _retry(self, what: str, connect: Callable[[], Any], attempts: int = 30) -> Any:
        # at start-up the database or broker may still be coming up (compose, k8s)
        for attempt in range(attempts):
            try:
                return await connect()
            except Exception as exc:
                if attempt == attempts - 1:
                    raise
                delay = min(5.0, 0.5 * 2**attempt)
                log.warning(f"{what} not reachable, retrying", error=repr(exc), retry_in=delay)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def start(self) -> None:
        s = self.settings
        s.check_bus_user(self.service)
        self._pool = await self._retry(
            "database",
            lambda: create_pool(
                s.dsn, schema=self.schema, min_size=s.db_pool_min, max_size=s.db_pool_max
            ),
        )
        await migrate(self.pool, schema=self.schema, package=self.package)
        await auth_store.prepare(self.pool)
        self._publisher = Publisher(s.broker_url, app_id=self.service, timeout=s.publish_timeout)
        await self._retry("broker", self._publisher.connect)
        await topology.declare_own(
            self.publisher.connection, self.queues, with_dlqs=self._declares_dlqs
        )
        self.relay = OutboxRelay(
            self.pool,
            self.publisher,
            schema=self.schema,
            batch=s.outbox_batch,
            poll_interval=s.outbox_poll_interval,
        )
        self.relay.start()
        await self._retry("broker (consumers)", self.broker.start)
        log.info("service started", queues=[q.name for q in self.queues])

    async def stop(self) -> None:
        # consumers first, letting in-flight messages finish (graceful_timeout); then the
        # relay publishes what they wrote; then the connections close
        await self.broker.stop()
        if self.relay is not None:
            await self.relay.stop()
        if self._publisher is not None:
            await self._publisher.close()
        if self._pool is not None:
            await self._pool.close()
        log.info("service stopped")

    @asynccontextmanager
    async def lifespan(self, *_: Any) -> AsyncIterator[None]:
        await self.start()
        try:
            yield
        finally:
            await self.stop()

    async def _database_reachable(self) -> bool:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.pool.fetchval("SELECT 1"), 2)
            return True
        # every pooled connection may simply be busy (a loaded service is not a broken one):
        # ask the server itself on a connection of the probe's own
        try:
            conn = await asyncpg.connect(self.settings.dsn, timeout=3)
        except Exception:
            return False
        try:
            await asyncio.wait_for(conn.fetchval("SELECT 1"), 2)
            return True
        except Exception:
            return False
        finally:
            await conn.close(timeout=2)

    async def ready(self) -> dict[str, bool]:
        checks = {"database": False, "broker": False, "publisher": False}
        if self._pool is not None:
            checks["database"] = await self._database_reachable()
        checks["publisher"] = self._publisher is not None and self._publisher.is_connected
        try:
            checks["broker"] = bool(await asyncio.wait_for(self.broker.ping(timeout=2), 3))
        except Exception:
            checks["broker"] = False
        return checks
