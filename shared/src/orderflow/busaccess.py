"""Who may do what on the bus, derived from the topology: one RabbitMQ user per service,
per department system and per outside system, each with the least it needs.

The same tables say which user the contract names as the producer of each message type,
so a consumer can refuse a message that RabbitMQ let through but the wrong party sent
(RabbitMQ vouches for `user_id`: it refuses a message whose `user_id` is not the user of
the connection publishing it).

RabbitMQ's checks (3.10+): declaring a queue needs `configure` on it (passive needs
nothing), and with a dead-letter exchange also `read` on the queue and `write` on that
exchange; `queue.bind` needs `write` on the queue and `read` on the exchange, and on a topic
exchange the topic `read` permission for the binding key; `basic.publish` needs `write` on
the exchange (`amq.default` for the default exchange), and on a topic exchange the topic
`write` permission for the routing key; get, consume and purge need `read` on the queue.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from . import refusals, topology
from .messages import EVENTS as EVENT_MODELS
from .messages import ReassignReview, ReviewAnnotated, SubmitOrder, VerdictGiven

SERVICES: tuple[str, ...] = ("intake", "review-router", "contracts", "notifier")

#: The event types each service publishes on `orderflow.events` (its outbox's enqueues).
PUBLISHES: dict[str, tuple[str, ...]] = {
    "intake": ("order.submitted", "order.withdrawal_requested"),
    "review-router": (
        "review.round_opened",
        "review.sent",
        "review.verdict_recorded",
        "review.overdue",
        "review.escalated",
        "review.annotation_recorded",
        "review.reassigned",
        "order.approved",
        "order.changes_requested",
        # the router decides withdrawals against the round's decision, under one lock
        "order.withdrawn",
        "order.withdrawal_refused",
    ),
    "contracts": ("contract.drafted", "contract.sent", "contract.signed", "contract.voided"),
    "notifier": ("notification.delivered", "notification.failed"),
}

#: event type -> the service whose user must have published it
EVENT_PRODUCERS: dict[str, str] = {t: s for s, types in PUBLISHES.items() for t in types}

#: What department systems send on `orderflow.verdicts`, and what submitters send.
DEPARTMENT_TYPES: tuple[str, ...] = (
    VerdictGiven.message_type,
    ReviewAnnotated.message_type,
    ReassignReview.message_type,
)
SUBMIT_TYPE = SubmitOrder.message_type

#: The queues each service consumes (and declares at start): the topology's queues named
#: `<service>.<purpose>`, so a new queue is written once, in `topology.SERVICE_QUEUES`.
OWN_QUEUES: dict[str, tuple[topology.QueueSpec, ...]] = {
    service: tuple(q for q in topology.SERVICE_QUEUES if q.name.split(".")[0] == service)
    for service in SERVICES
}

#: The router owns the department queues, `review.<department>`, and declares them (a
#: policy may add departments), with their dead-letter queues.
DEPARTMENT_QUEUE_PATTERN = r"review\.[a-z][a-z0-9_]*(\.dlq)?"
ORIGINAL_USER = "x-orderflow-original-user-id"
REPLAYS = "x-orderflow-replays"
GUEST = "guest"
DISCARDED = "ops.discarded"  # deadletters.DISCARDED


def check_tables() -> None:
    """The tables above cover every event of the contract exactly once."""
    missing = sorted(set(EVENT_MODELS) - set(EVENT_PRODUCERS))
    unknown = sorted(set(EVENT_PRODUCERS) - set(EVENT_MODELS))
    if missing or unknown:
        raise AssertionError(f"busaccess: no producer for {missing}; not events: {unknown}")


def accepted_types(spec: topology.QueueSpec) -> tuple[str, ...] | None:
    """The message types a consumer of `spec` takes; None: any event (a `#` binding)."""
    if spec.exchange == topology.EVENTS:
        return None if "#" in spec.routing_keys else tuple(spec.routing_keys)
    if spec.exchange == topology.COMMANDS:
        return (SUBMIT_TYPE,)
    if spec.exchange == topology.VERDICTS:
        return DEPARTMENT_TYPES
    return ()


# --- permissions ------------------------------------------------------------------------


@dataclass(frozen=True)
class Permissions:
    """Regular expressions, as RabbitMQ takes them; `^$` allows nothing."""

    configure: str
    write: str
    read: str
    topic_write: str = "^$"  # routing keys it may publish on orderflow.events
    topic_read: str = "^$"  # binding keys it may bind from orderflow.events


NOTHING = "^$"


def _any_of(names: Iterable[str], *patterns: str) -> str:
    parts = [re.escape(n) for n in dict.fromkeys(names)] + list(patterns)
    return f"^({'|'.join(parts)})$" if parts else NOTHING


def service_permissions(service: str) -> Permissions:
    queues = OWN_QUEUES[service]
    names = [q.name for q in queues]
    dlqs = [q.dlq for q in queues]
    sources = {q.exchange for q in queues}
    published = [topology.DLX, "amq.default"]  # dead letters; replies and replays
    # the ops API's discard keeps a copy in `ops.discarded`, which it declares
    own = list(names)
    archive = [DISCARDED]
    extra: list[str] = []
    if PUBLISHES[service]:
        published.append(topology.EVENTS)
    if service == "review-router":
        published.append(topology.REVIEWS)
        # it declares the department queues and their dead-letter queues, bound to the DLX
        own += dlqs
        extra.append(DEPARTMENT_QUEUE_PATTERN)
        sources |= {topology.REVIEWS, topology.DLX}
    event_keys = [k for q in queues if q.exchange == topology.EVENTS for k in q.routing_keys]
    return Permissions(
        configure=_any_of([*own, *archive], *extra),
        write=_any_of([*own, *published], *extra),
        # its dead-letter queues too: the operator lists and replays them as the service
        read=_any_of([*names, *dlqs, *sorted(sources)], *extra),
        topic_write=_any_of(PUBLISHES[service]),
        topic_read=_any_of(event_keys),
    )


def department_permissions(department: str, user: str | None = None) -> Permissions:
    """Reads its own review requests, sends verdicts; declares and reads its own reply
    queues, `<user>.*` (where refusals are answered); declares, binds and purges nothing
    else (purging needs `read`, so it can purge only its own queues)."""
    name = user or department_user(department)
    return Permissions(
        configure=_any_of([], _own_prefix(name)),
        write=_any_of([topology.VERDICTS]),
        read=_any_of([topology.department_queue(department).name], _own_prefix(name)),
    )


def _own_prefix(user: str) -> str:
    return rf"{re.escape(user)}\..+"


def submitter_permissions(user: str) -> Permissions:
    """Sends `order.submit`; declares and reads its own reply queues, `<user>.*`."""
    return Permissions(
        configure=_any_of([], _own_prefix(user)),
        write=_any_of([topology.COMMANDS]),
        read=_any_of([], _own_prefix(user)),
    )


def listener_permissions(user: str, event_types: Iterable[str]) -> Permissions:
    """Its own queues, `<user>.*`, bound to the chosen event types of orderflow.events."""
    types = list(event_types)
    unknown = sorted(set(types) - set(EVENT_PRODUCERS))
    if unknown or not types:
        raise ValueError(
            f"event types: {unknown or 'none given'}; choose from {sorted(EVENT_PRODUCERS)}"
        )
    return Permissions(
        configure=_any_of([], _own_prefix(user)),
        write=_any_of([], _own_prefix(user)),
        read=_any_of([topology.EVENTS], _own_prefix(user)),
        topic_read=_any_of(types),
    )


# --- who is who -------------------------------------------------------------------------


def department_user(department: str, *, pattern: str = "dept-{department}") -> str:
    return pattern.format(department=department)


@dataclass(frozen=True)
class Trust:
    """What a consuming service believes about producers: its own user, the user of every
    service, and the users allowed to send the types that come from outside (submitters,
    department systems)."""

    own_user: str
    service_users: Mapping[str, str]
    outside: Mapping[str, frozenset[str]]

    def expected(self, message_type: str) -> frozenset[str] | None:
        """The users that may have produced `message_type`; None for a type of no contract."""
        producer = EVENT_PRODUCERS.get(message_type)
        if producer is not None:
            return frozenset({self.service_users.get(producer, producer)})
        return self.outside.get(message_type)

    def producer_of(self, user_id: str | None, headers: Mapping[str, Any]) -> str | None:
        """Who produced the message: its `user_id`, or for a replay (which this service's
        own user sends back) the producer recorded when it was dead-lettered."""
        if user_id and user_id == self.own_user and REPLAYS in headers:
            original = headers.get(ORIGINAL_USER)
            if isinstance(original, bytes):
                original = original.decode(errors="replace")
            return str(original) if original else None
        return user_id

    def refusal(
        self,
        *,
        queue: str,
        accepted: tuple[str, ...] | None,
        message_type: str | None,
        user_id: str | None,
        headers: Mapping[str, Any],
    ) -> refusals.Refused | None:
        """Why the message must be refused, or None when the right party sent it."""
        kind = message_type or ""
        if accepted is not None and kind not in accepted:
            return refusals.Refused(
                refusals.UNEXPECTED_TYPE,
                f"unknown message type {message_type!r} on {queue}: expected one of "
                f"{', '.join(accepted) or 'none'}",
            )
        expected = self.expected(kind)
        if expected is None:
            return None  # a type of no contract on a `#` queue: the handler ignores it
        producer = self.producer_of(user_id, headers)
        if producer in expected:
            return None
        wanted = " or ".join(sorted(expected)) or "(no user configured)"
        if not user_id:
            return refusals.Refused(
                refusals.MISSING_USER_ID,
                f"{kind} without user_id refused: it must be published by {wanted} with the "
                "AMQP user_id property set, which RabbitMQ checks",
            )
        seen = user_id if producer == user_id else f"{user_id} (replaying {producer!r})"
        return refusals.Refused(
            refusals.WRONG_PRODUCER,
            f"{kind} from user {seen} refused: only {wanted} may publish it",
        )


def service_users(mapping: Mapping[str, str] | None = None) -> dict[str, str]:
    """service -> RabbitMQ user: the service's own name unless `mapping` says otherwise."""
    users = {s: s for s in SERVICES}
    users.update(mapping or {})
    return users
