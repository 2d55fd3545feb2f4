"""What every handler shares: the channels, the errors an edge answers, the actor, the outcome,
and the document's parse and self-check."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any, TypeVar
from uuid import UUID

import structlog

from orderflow.db import Connection, Pool
from orderflow.messages import (
    AttachmentKind,
    AttachmentRef,
    OrderDocument,
    Totals,
)

from .. import domain
from ..adapters import repository
from ..domain import Status

log = structlog.get_logger(__name__)

T = TypeVar("T")

API = "api"
BUS = "bus"
IMPORT = "import"


class OrderNotFound(Exception):
    def __init__(self, order_id: UUID) -> None:
        self.order_id = order_id
        super().__init__(f"order {order_id} does not exist")


class RevisionNotFound(Exception):
    def __init__(self, order_id: UUID, revision: int) -> None:
        self.order_id = order_id
        self.revision = revision
        super().__init__(f"order {order_id} has no revision {revision}")


class AttachmentNotFound(Exception):
    def __init__(self, order_id: UUID, attachment_id: UUID, where: str = "") -> None:
        self.order_id = order_id
        self.attachment_id = attachment_id
        super().__init__(f"order {order_id} has no file {attachment_id}{where}")


class NotPermitted(Exception):
    """The caller may not change this salesperson's order (checked under the order's lock:
    its salesperson may have changed since the request was let in)."""

    def __init__(self, order_id: UUID) -> None:
        self.order_id = order_id
        super().__init__(f"you may not change order {order_id}")


#: Who did something, as the timeline keeps it: `Caller.audit()` for an HTTP request (id,
#: kind, via, source address), `bus_actor` for a command from the bus.
Actor = dict[str, Any]
#: Whether the caller may change the orders of a salesperson (by id).
Permits = Callable[[str], bool]


def bus_actor(user_id: str | None) -> Actor:
    """The broker user that published a command (RabbitMQ checks `user_id` against the
    connection's user), as a system actor."""
    return {"id": user_id or "(no user_id)", "kind": "system", "via": "amqp"}


class IdempotencyKeyReused(Exception):
    def __init__(self, key: str, order_id: UUID) -> None:
        self.key = key
        self.order_id = order_id
        super().__init__(
            f"Idempotency-Key {key!r} was already used for a different request (order "
            f"{order_id}); send the same body again, or use a new key for a new order"
        )


@dataclass(frozen=True)
class Outcome:
    order_id: UUID
    revision: int
    status: Status
    created: bool = True
    possible_duplicate_of: list[UUID] = field(default_factory=list)


def fingerprint(document: OrderDocument, *, submit: bool) -> str:
    """The request a key stands for: the parsed document (so formatting does not matter)
    and whether it was submitted at once."""
    canonical = json.dumps(
        {"document": document.model_dump(mode="json"), "submit": submit},
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def document_json(document: OrderDocument) -> dict[str, Any]:
    return document.model_dump(mode="json")


def totals_json(document: OrderDocument) -> dict[str, Any]:
    return Totals.of(document).model_dump(mode="json")


def salesperson_of(document: OrderDocument | dict[str, Any]) -> dict[str, Any]:
    if isinstance(document, OrderDocument):
        return document.salesperson.model_dump(mode="json")
    return dict(document.get("salesperson") or {})


def attachment_ref(row: dict[str, Any]) -> AttachmentRef:
    return AttachmentRef(
        id=row["id"],
        name=row["name"],
        kind=AttachmentKind(row["kind"]),
        content_type=row["content_type"],
        size=row["size"],
        sha256=row["sha256"],
        download_path=domain.download_path(row["order_id"], row["id"]),
    )


async def files_of(conn: Connection | Pool, order_id: UUID, revision: int) -> list[AttachmentRef]:
    rows = await repository.revision_attachments(conn, order_id=order_id, revision=revision)
    return [attachment_ref(r) for r in rows]


def run_self_check(
    document: OrderDocument, *, today: date, attachments: Sequence[AttachmentRef]
) -> None:
    problems = domain.self_check(document, today=today, attachments=attachments)
    if problems:
        raise domain.SelfCheckFailed(problems)


def parsed_document(raw: Any, *, today: date, submit: bool) -> OrderDocument:
    """A document as it arrived over HTTP or in an import: the order when every field has
    its type, or SelfCheckFailed with every problem at once (to be submitted at once, the
    self-check's rules over the rest too). A well-typed order's rules are checked where it
    is submitted, after the caller was found to be allowed to."""
    checked = domain.check_document(raw, today=today, attachments=[] if submit else None)
    if checked.document is None:
        checked.refuse()
    assert checked.document is not None
    return checked.document
