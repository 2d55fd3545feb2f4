"""Commands on `orderflow.commands` (direct exchange, routing key = the command name)."""

from __future__ import annotations

from typing import ClassVar
from uuid import UUID

from pydantic import Field, model_validator

from .base import Document, Message, RevisionNo
from .order import OrderDocument


class SubmitOrder(OrderDocument):
    """`order.submit`: the order document itself, as another company system sends it.

    Without `order_id` a new order is created and submitted; with it, a new revision of an
    order that is in `draft` or `changes_requested` is submitted.
    """

    message_type: ClassVar[str] = "order.submit"
    schema_version: ClassVar[int] = 1

    order_id: UUID | None = None
    revises: RevisionNo | None = Field(
        default=None,
        description="With `order_id`: the revision this one was made from (the one the "
        "departments sent back). When the order has a later revision by then, the command "
        "is answered as a retryable conflict instead of replacing that revision's answer",
    )

    @model_validator(mode="after")
    def _revises_an_order(self) -> SubmitOrder:
        if self.revises is not None and self.order_id is None:
            raise ValueError("revises names a revision of an order: send order_id with it")
        return self

    @classmethod
    def schema_name(cls) -> str:
        return f"orderflow.{cls.message_type}"


class Problem(Document):
    """One problem with one field, as RFC 9457 `errors` entries and command replies carry it."""

    pointer: str = Field(description="JSON pointer to the field, e.g. /customer/email")
    detail: str


class SubmitOrderReply(Message):
    """Sent to the command's `reply_to`, when it has one."""

    message_type = "order.submit.reply"

    accepted: bool
    retryable: bool = Field(
        default=False,
        description="Refused because of a conflict that can pass (another revision came "
        "first, the departments' decision had not reached intake yet): read the order "
        "again and send the command again; the document itself is not at fault",
    )
    reason: str | None = Field(default=None, description="Why it was refused, in one line")
    order_id: UUID | None = None
    revision: RevisionNo | None = None
    status: str | None = None
    problems: list[Problem] = Field(default_factory=list)
