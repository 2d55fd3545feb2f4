"""Replies the product sends to a message's `reply_to`, whatever the message was."""

from __future__ import annotations

from pydantic import Field

from .base import Message
from .commands import Problem


class MessageRefused(Message):
    """`message.refused`: the message named by `refused_message_id` was refused and moved to
    its queue's dead-letter queue; sent to its `reply_to`, with `correlation_id` = its
    `correlation_id` (or its `message_id` when it had none). An `order.submit` is answered
    with `order.submit.reply` instead."""

    message_type = "message.refused"

    code: str = Field(
        description="Why, as a stable code (docs/integration.md, Refusals and their codes); "
        "new codes may be added",
        examples=["missing_user_id"],
    )
    reason: str = Field(description="Why, in one sentence for a person")
    problems: list[Problem] = Field(
        default_factory=list, description="The fields at fault, as JSON pointers into the body"
    )
    refused_message_id: str | None = Field(
        default=None, description="The `message_id` of the refused message"
    )
    refused_type: str | None = Field(
        default=None, description="The AMQP `type` of the refused message"
    )
