"""Consuming with the reliability recipe: inbox de-duplication in the effect's transaction,
ack only after commit, transient faults retried with back-off, and a message that can never
succeed dead-lettered with the reason in its headers while the consumer carries on.

`ReliableConsumer` is a faststream broker middleware, so every subscriber of a service gets
the same behaviour; subscribers use `AckPolicy.MANUAL` and leave acknowledging to it.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import random
import uuid
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

import asyncpg
import pydantic
import structlog
from fast_depends.exceptions import ValidationError as DependsValidationError
from faststream import BaseMiddleware
from faststream.message import StreamMessage
from prometheus_client import Counter, Histogram

from . import busaccess, inbox, jsonpointer, limits, refusals
from .db import Connection, Pool
from .messages import Problem
from .outbox import envelope_headers
from .publisher import Publisher, PublishError
from .times import format_time
from .topology import COMMANDS, DLX
from .tracing import set_current_trace, trace_id_of

if TYPE_CHECKING:
    from faststream._internal.context.repository import ContextRepo

log = structlog.get_logger(__name__)

CONSUMED = Counter(
    "orderflow_messages_consumed_total",
    "Messages consumed, by queue and outcome",
    ["queue", "outcome"],
)
HANDLING_SECONDS = Histogram(
    "orderflow_message_handling_seconds", "Time to handle one message", ["queue"]
)


class UntrustedProducer(Exception):
    """The message did not come from the party the contract names as its producer."""

    def __init__(self, refused: refusals.Refused) -> None:
        super().__init__(refused.reason)
        self.code = refused.code


class PermanentError(Exception):
    """This message can never succeed (unknown order, broken invariant): dead-letter it.

    `code` is one of `orderflow.refusals`; `problems` name the fields at fault; a message
    with `reply_to` gets both in its refusal reply.
    """

    def __init__(self, reason: str, problems: Sequence[Problem] = (), *, code: str) -> None:
        super().__init__(reason)
        if code not in refusals.CODES:
            raise ValueError(f"unknown refusal code {code!r}")
        self.code = code
        self.problems = list(problems)


TRANSIENT: tuple[type[BaseException], ...] = (
    OSError,
    ConnectionError,
    TimeoutError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.DeadlockDetectedError,
    asyncpg.SerializationError,
    asyncpg.AdminShutdownError,
    asyncpg.QueryCanceledError,
    PublishError,
)

POISON: tuple[type[BaseException], ...] = (
    UntrustedProducer,
    PermanentError,
    pydantic.ValidationError,
    DependsValidationError,
    json.JSONDecodeError,
    UnicodeDecodeError,
)


class ConsumerRuntime(Protocol):
    """What the middleware needs from the running service (filled in at start)."""

    service: str
    trust: busaccess.Trust
    accepts: dict[str, tuple[str, ...] | None]
    #: queue -> what a refused message's sender gets on `reply_to` (else `refusals.reply_for`)
    replies: dict[str, refusals.ReplyBuilder]

    @property
    def pool(self) -> Pool: ...

    @property
    def publisher(self) -> Publisher: ...


class RetryPolicy:
    def __init__(
        self,
        *,
        transient_for: float = 300.0,
        unexpected_attempts: int = 3,
        base: float = 0.2,
        cap: float = 10.0,
    ) -> None:
        self.transient_for = transient_for
        self.unexpected_attempts = unexpected_attempts
        self.base = base
        self.cap = cap

    def delay(self, attempt: int) -> float:
        # full jitter: replicas that failed together do not retry together
        return random.uniform(0, min(self.cap, self.base * 2**attempt))


def _pointer(loc: Sequence[int | str]) -> str:
    return jsonpointer.join(loc) or "/"


def body_problems(exc: pydantic.ValidationError, handlers: Collection[str] = ()) -> list[Problem]:
    """The validation errors as field problems, pointing into the message body."""
    # fast_depends validates a subscriber's arguments as one model named after the function,
    # so its locations start with the argument's name, which the sender never saw
    strip = exc.title in handlers
    return [
        Problem(pointer=_pointer(err["loc"][1:] if strip else err["loc"]), detail=err["msg"])
        for err in exc.errors()
    ]


#: The dead letter's header with its refusal code (`orderflow.refusals`).
REASON_CODE = "x-orderflow-reason-code"

#: A dead letter's reason lists at most this many field problems, each cut to
#: `PROBLEM_CHARS`; the reply to the sender has them all, whole.
REASON_PROBLEMS = 20
PROBLEM_CHARS = 160


def listed(problems: Sequence[Problem]) -> str:
    """Field problems in one line, `pointer: detail; ...`, bounded in length."""
    parts = []
    for p in problems[:REASON_PROBLEMS]:
        detail = p.detail if len(p.detail) <= PROBLEM_CHARS else p.detail[: PROBLEM_CHARS - 1] + "…"
        parts.append(f"{p.pointer[:PROBLEM_CHARS]}: {detail}")
    more = len(problems) - REASON_PROBLEMS
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def describe(exc: BaseException, handlers: Collection[str] = ()) -> str:
    """Why, in one sentence for a person: never a Python class name."""
    if isinstance(exc, pydantic.ValidationError):
        return "invalid message: " + listed(body_problems(exc, handlers))
    if isinstance(exc, PermanentError) and [p.detail for p in exc.problems] not in ([], [str(exc)]):
        # the reason names the fields at fault, so the dead letter alone says what to fix
        return f"{exc}: {listed(exc.problems)}"
    if isinstance(exc, PermanentError | UntrustedProducer):
        return str(exc)
    if isinstance(exc, DependsValidationError):
        return f"invalid message: {exc}"
    if isinstance(exc, json.JSONDecodeError | UnicodeDecodeError):
        return f"body is not JSON: {exc}"
    # a fault of the service (its log has the traceback), not a refusal of the sender's
    detail = str(exc).strip()
    return "the service failed to handle the message" + (f": {detail}" if detail else "")


def code_of(exc: BaseException) -> str:
    """The refusal code (`orderflow.refusals`) of what made a message a dead letter."""
    if isinstance(exc, PermanentError | UntrustedProducer):
        return exc.code
    if isinstance(exc, pydantic.ValidationError | DependsValidationError):
        return refusals.INVALID_MESSAGE
    if isinstance(exc, json.JSONDecodeError | UnicodeDecodeError):
        return refusals.NOT_JSON
    return refusals.PROCESSING_FAILED


def problems_of(exc: BaseException, handlers: Collection[str] = ()) -> list[Problem]:
    if isinstance(exc, PermanentError):
        return exc.problems
    if isinstance(exc, pydantic.ValidationError):
        return body_problems(exc, handlers)
    return [Problem(pointer="", detail=describe(exc))]


def refusal_of(exc: BaseException, handlers: Collection[str] = ()) -> refusals.Refused:
    return refusals.Refused(
        code_of(exc), describe(exc, handlers)[:4000], problems_of(exc, handlers)
    )


def handler_names(context: ContextRepo) -> set[str]:
    subscriber = context.get_local("handler_")
    return {str(call.name) for call in getattr(subscriber, "calls", ())}


def queue_of(context: ContextRepo, msg: StreamMessage[Any]) -> str:
    handler = context.get_local("handler_")
    queue = getattr(handler, "queue", None)
    name = getattr(queue, "name", None)
    return str(name) if name else str(msg.raw_message.routing_key)


def _oversized(msg: StreamMessage[Any]) -> PermanentError | None:
    """A command over the size limit is refused before it is parsed: no order needs it."""
    size = len(msg.raw_message.body)
    if msg.raw_message.exchange != COMMANDS or size <= limits.MAX_COMMAND_BYTES:
        return None
    detail = f"the body has {size} bytes; a command may have at most {limits.MAX_COMMAND_BYTES}"
    return PermanentError(
        detail, problems=[Problem(pointer="/", detail=detail)], code=refusals.TOO_LARGE
    )


class ReliableConsumer(BaseMiddleware):
    """Acknowledges after the handler returned (its transaction committed), retries transient
    faults, dead-letters poison with the reason. Build with `ReliableConsumer.factory(...)`."""

    runtime: ConsumerRuntime
    policy: RetryPolicy

    @classmethod
    def factory(
        cls, runtime: ConsumerRuntime, policy: RetryPolicy | None = None
    ) -> Callable[..., ReliableConsumer]:
        chosen = policy or RetryPolicy()

        def build(msg: Any, /, *, context: ContextRepo) -> ReliableConsumer:
            mw = cls(msg, context=context)
            mw.runtime = runtime
            mw.policy = chosen
            return mw

        return build

    async def consume_scope(
        self, call_next: Callable[[StreamMessage[Any]], Awaitable[Any]], msg: StreamMessage[Any]
    ) -> Any:
        queue = queue_of(self.context, msg)
        headers = msg.headers or {}
        set_current_trace(trace_id_of(headers.get("traceparent")))
        bound = log.bind(
            queue=queue,
            message_id=msg.message_id,
            message_type=msg.raw_message.type,
            correlation_id=msg.correlation_id,
        )
        oversized = _oversized(msg)
        if oversized is not None:
            await self._dead_letter(msg, queue, oversized, bound)
            return None
        refusal = self._refusal(queue, msg)
        if refusal is not None:
            # before the handler: a forged message changes nothing
            await self._dead_letter(msg, queue, UntrustedProducer(refusal), bound)
            return None
        loop = asyncio.get_running_loop()
        started = loop.time()
        attempt = 0
        while True:
            try:
                with HANDLING_SECONDS.labels(queue).time():
                    result = await call_next(msg)
            except POISON as exc:
                await self._dead_letter(msg, queue, exc, bound)
                return None
            except TRANSIENT as exc:
                waited = loop.time() - started
                if waited > self.policy.transient_for:
                    # give the message back; the delivery limit stops an endless loop
                    bound.error("transient fault persists, requeueing", error=repr(exc))
                    CONSUMED.labels(queue, "requeued").inc()
                    await msg.nack(requeue=True)  # type: ignore[call-arg]
                    return None
                delay = self.policy.delay(attempt)
                bound.warning("transient fault, retrying", error=repr(exc), retry_in=delay)
                attempt += 1
                await asyncio.sleep(delay)
                continue
            except asyncio.CancelledError:
                await msg.nack(requeue=True)  # type: ignore[call-arg]
                raise
            except Exception as exc:
                attempt += 1
                if attempt >= self.policy.unexpected_attempts:
                    bound.exception("handler keeps failing, dead-lettering")
                    await self._dead_letter(msg, queue, exc, bound)
                    return None
                bound.warning("handler failed, retrying", error=repr(exc), attempt=attempt)
                await asyncio.sleep(self.policy.delay(attempt))
                continue
            await msg.ack()
            CONSUMED.labels(queue, "ok").inc()
            return result

    def _refusal(self, queue: str, msg: StreamMessage[Any]) -> refusals.Refused | None:
        raw = msg.raw_message
        if queue not in self.runtime.accepts:
            return None  # not a subscriber of the runtime's (a test's own consumer)
        return self.runtime.trust.refusal(
            queue=queue,
            accepted=self.runtime.accepts[queue],
            message_type=raw.type,
            user_id=raw.user_id,
            headers=raw.headers or {},
        )

    async def _dead_letter(
        self,
        msg: StreamMessage[Any],
        queue: str,
        exc: BaseException,
        bound: structlog.typing.FilteringBoundLogger,
    ) -> None:
        refused = refusal_of(exc, handler_names(self.context))
        reason = refused.reason
        raw = msg.raw_message
        headers = dict(raw.headers or {})
        headers.pop("x-orderflow-error", None)  # written by older versions: a class name
        headers.update(
            {
                REASON_CODE: refused.code,
                "x-orderflow-reason": reason,
                "x-orderflow-queue": queue,
                "x-orderflow-service": self.runtime.service,
                "x-orderflow-dead-lettered-at": format_time(datetime.now(UTC)),
                "x-orderflow-original-exchange": raw.exchange or "",
                "x-orderflow-original-routing-key": raw.routing_key or "",
                # republished as this service (RabbitMQ would refuse another user_id): the
                # producer is kept here, for a replay to be judged by
                busaccess.ORIGINAL_USER: self.runtime.trust.producer_of(raw.user_id, headers) or "",
            }
        )
        try:
            await self.runtime.publisher.publish(
                exchange=DLX,
                routing_key=queue,
                body=raw.body,
                message_id=raw.message_id or "",
                message_type=raw.type or "",
                correlation_id=raw.correlation_id,
                reply_to=raw.reply_to,
                headers=headers,
                timestamp=raw.timestamp,
            )
        except PublishError as pub_exc:
            # not lost: back into the queue, and the delivery limit dead-letters it at last
            bound.error("dead-lettering failed, requeueing", error=repr(pub_exc))
            CONSUMED.labels(queue, "requeued").inc()
            await msg.nack(requeue=True)  # type: ignore[call-arg]
            return
        bound.warning("message dead-lettered", reason=reason, code=refused.code)
        CONSUMED.labels(queue, "dead_lettered").inc()
        if raw.reply_to:
            await self._reply_refused(msg, queue, refused, bound)
        await msg.ack()

    async def _reply_refused(
        self,
        msg: StreamMessage[Any],
        queue: str,
        refused: refusals.Refused,
        bound: structlog.typing.FilteringBoundLogger,
    ) -> None:
        """The sender waiting on `reply_to` learns at once why its message was refused: the
        reply its queue's subscriber was given (`reply=`), else `refusals.reply_for`'s."""
        raw = msg.raw_message
        build = self.runtime.replies.get(queue, refusals.reply_for)
        reply = build(
            refused, refusals.RefusedMessage(message_id=raw.message_id, message_type=raw.type)
        )
        try:
            await self.runtime.publisher.publish(
                exchange="",
                routing_key=str(raw.reply_to),
                body=reply.model_dump_json().encode(),
                message_id=str(uuid.uuid4()),
                message_type=reply.message_type,
                correlation_id=raw.correlation_id or raw.message_id,
                headers=envelope_headers(reply),
                mandatory=False,  # the sender may have gone; the message is in the DLQ anyway
            )
        except PublishError as pub_exc:
            bound.warning("refusal reply not sent", error=repr(pub_exc))


async def apply_once(
    pool: Pool,
    msg: StreamMessage[Any],
    *,
    consumer: str,
    effect: Callable[[Connection], Awaitable[None]],
) -> bool:
    """Run `effect` in one transaction with the inbox claim; False for a duplicate. (The
    consume path of `ServiceRuntime.consume` does this itself, keyed by the queue's name.)"""
    message_id = msg.raw_message.message_id
    if not message_id:
        raise PermanentError(
            "message has no message_id (required for de-duplication)",
            code=refusals.MISSING_MESSAGE_ID,
        )
    run = claimed(pool, queue=consumer, message_id=message_id, message_type=msg.raw_message.type)
    return await run(effect)


# --- the consume path: a queue's subscriber from its spec and typed handlers -----------------


@dataclass(frozen=True)
class Delivery:
    """What a handler may need of a message besides its body: its AMQP properties, and who
    produced it (`producer`: the `user_id`, or for a replay the user recorded at dead-
    lettering). `apply_once` claims it in the queue's inbox with an effect, for a handler
    that works before its transaction (`ServiceRuntime.consume_in_steps`)."""

    queue: str
    message_id: str
    message_type: str | None
    correlation_id: str | None
    reply_to: str | None
    user_id: str | None
    producer: str | None
    routing_key: str | None
    timestamp: datetime | None
    headers: Mapping[str, Any]
    pool: Pool = field(repr=False)
    #: the body as it arrived and where it was published, for a handler that keeps the
    #: message to dead-letter it after its transaction committed (contracts' renders)
    body: bytes = field(default=b"", repr=False)
    exchange: str | None = None

    async def apply_once(self, effect: Callable[[Connection], Awaitable[None]]) -> bool:
        """Run `effect` in one transaction with the inbox claim; False for a duplicate."""
        return await claimed(
            self.pool, queue=self.queue, message_id=self.message_id, message_type=self.message_type
        )(effect)


#: A handler of a queue's messages, run inside the inbox transaction.
Handler = Callable[[Connection, Any, Delivery], Awaitable[None]]
#: A handler that opens its own transaction(s) with `delivery.apply_once`.
StepsHandler = Callable[[Any, Delivery], Awaitable[None]]


def claimed(
    pool: Pool, *, queue: str, message_id: str, message_type: str | None
) -> Callable[[Callable[[Connection], Awaitable[None]]], Awaitable[bool]]:
    async def run(effect: Callable[[Connection], Awaitable[None]]) -> bool:
        async with pool.acquire() as conn, conn.transaction():
            if not await inbox.claim(
                conn, consumer=queue, message_id=message_id, message_type=message_type
            ):
                log.info("duplicate message ignored", consumer=queue, message_id=message_id)
                return False
            await effect(conn)
        return True

    return run


def delivery_of(
    msg: StreamMessage[Any], *, queue: str, pool: Pool, trust: busaccess.Trust
) -> Delivery:
    """The handler's view of a message; refused when it has no `message_id`, which the
    inbox needs (the AMQP property itself: faststream would invent one for a message
    without it, and a made-up id cannot catch a redelivery)."""
    raw = msg.raw_message
    if not raw.message_id:
        raise PermanentError(
            "message has no message_id (required for de-duplication)",
            code=refusals.MISSING_MESSAGE_ID,
        )
    headers = raw.headers or {}
    return Delivery(
        queue=queue,
        message_id=str(raw.message_id),
        message_type=raw.type,
        correlation_id=raw.correlation_id,
        reply_to=raw.reply_to,
        user_id=raw.user_id,
        producer=trust.producer_of(raw.user_id, headers),
        routing_key=raw.routing_key,
        timestamp=raw.timestamp,
        headers=headers,
        pool=pool,
        body=bytes(raw.body),
        exchange=raw.exchange,
    )


def body_parser(model: Any) -> Callable[[bytes], Any]:
    """`body -> model`, straight from the bytes (pydantic's JSON parser, no `json.loads`
    first). A body that is not JSON is refused as before, as `not_json` with the standard
    library's words, which only the refused body pays for."""
    if isinstance(model, type) and issubclass(model, pydantic.BaseModel):
        validate: Callable[[bytes], Any] = model.model_validate_json
    else:
        validate = pydantic.TypeAdapter(model).validate_json

    def parse(body: bytes) -> Any:
        try:
            return validate(body)
        except pydantic.ValidationError as exc:
            if any(e["type"] == "json_invalid" for e in exc.errors()):
                json.loads(body)  # raises JSONDecodeError or UnicodeDecodeError
            raise

    return parse


def model_of(handler: Callable[..., Any], position: int) -> Any:
    """The annotation of the handler's parameter at `position`: the message model. Only
    that one is resolved (its other annotations may name types of `TYPE_CHECKING` only)."""
    params = list(inspect.signature(handler).parameters.values())
    annotation = params[position].annotation if len(params) > position else inspect.Parameter.empty
    if annotation is inspect.Parameter.empty:
        name = getattr(handler, "__name__", handler)
        raise TypeError(f"{name}: parameter {position + 1} must be annotated with its model")
    if isinstance(annotation, str):  # `from __future__ import annotations`
        scope = {**getattr(handler, "__globals__", {}), **inspect.getclosurevars(handler).nonlocals}
        annotation = eval(annotation, scope)  # noqa: S307  # the handler's own source text
    return annotation


async def as_is(msg: StreamMessage[Any]) -> StreamMessage[Any]:
    """faststream's decoder for the consume path: the message itself, undecoded; the
    subscriber parses the body with its model (faststream's `json.loads` is not needed)."""
    return msg
