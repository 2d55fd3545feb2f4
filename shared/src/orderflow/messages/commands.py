"""Commands on `orderflow.commands` (direct exchange, routing key = the command name)."""

from __future__ import annotations

from typing import Annotated, ClassVar
from urllib.parse import urlsplit
from uuid import UUID

from pydantic import Field, field_validator, model_validator

from .. import limits
from .base import Chars, Document, Message, RevisionNo, ShortText
from .order import AttachmentKind, OrderDocument

#: An absolute http(s) URL, one line.
Url = Annotated[str, Chars(limits.URL, min_length=1)]


class AttachmentUrl(Document):
    """A file of the revision, named by a URL intake fetches (decision 0024): the bus
    carries no bytes. Fetched through the outbound guard (`INTAKE_OUTBOUND_ALLOW`), under
    the upload limits (size, accepted kinds of file), and stored with the revision before
    its self-check; a file that cannot be fetched refuses the command, naming
    `/attachments/<n>/url`."""

    url: Url = Field(
        description="`https://` (or `http://`) URL of the file, fetched with GET, no "
        "redirects followed; a pre-signed URL of an object store does. It is not stored",
        json_schema_extra={"format": "uri"},
    )
    kind: AttachmentKind = Field(description="What the file is, as an upload's `kind`")
    filename: ShortText = Field(
        description="The file's name, shown to the reviewers; its extension must match the "
        "file's content"
    )
    media_type: ShortText | None = Field(
        default=None,
        description="The declared content type (as an upload's part header); the bytes "
        "decide, and a type that says otherwise is refused",
    )
    sha256: Annotated[str, Field(pattern=r"^[0-9a-fA-F]{64}$")] | None = Field(
        default=None,
        description="The file's SHA-256 (hex): when given, a file with other bytes is refused",
    )
    id: UUID | None = Field(
        default=None,
        description="The id the file is stored under, chosen by the sender (a random UUID) "
        "so that `customer_confirmation.attachment_id` can name it; assigned by intake "
        "when left out. An id already in use is refused",
    )

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an absolute http:// or https:// URL")
        return value

    @field_validator("sha256")
    @classmethod
    def _lower(cls, value: str | None) -> str | None:
        return value.lower() if value is not None else None


class SubmitOrder(OrderDocument):
    """`order.submit`: the order document itself, as another company system sends it.

    Without `order_id` a new order is created and submitted; with it, a new revision of an
    order that is in `draft` or `changes_requested` is submitted. `attachments` are files
    intake fetches by URL and adds to that revision before its self-check.
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
    attachments: Annotated[
        list[AttachmentUrl], Field(max_length=limits.MAX_COMMAND_ATTACHMENTS)
    ] = Field(
        default_factory=list,
        description="Files to add to the revision, fetched by intake from their URLs before "
        "the self-check (a revision keeps the files of the one it follows as well)",
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
    code: str | None = Field(
        default=None,
        description="Why it was refused, as a stable code (docs/integration.md, Refusals and "
        "their codes), e.g. `self_check_failed`, `stale_revision`; null when accepted",
    )
    reason: str | None = Field(default=None, description="Why it was refused, in one line")
    order_id: UUID | None = None
    revision: RevisionNo | None = None
    status: str | None = None
    problems: list[Problem] = Field(default_factory=list)
