"""Base classes shared by every command and event on the bus."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, ClassVar

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer

# Money and quantities travel as decimal strings ("85.50"), never as floats: a float cannot
# hold 0.1 exactly and a contract total must add up to the cent.
DecimalStr = Annotated[
    Decimal,
    Field(allow_inf_nan=False),
    PlainSerializer(lambda v: format(v, "f"), return_type=str, when_used="json"),
]


class Document(BaseModel):
    """A part of a public document: unknown fields are refused, so a typo never goes unnoticed."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class Message(BaseModel):
    """One command or event. Its class names the AMQP `type` and the schema version.

    Consumers ignore fields they do not know, so a producer can add a field without
    breaking an older consumer; a breaking change bumps `schema_version`.
    """

    model_config = ConfigDict(extra="ignore")

    message_type: ClassVar[str]
    schema_version: ClassVar[int] = 1

    @classmethod
    def schema_name(cls) -> str:
        return f"orderflow.{cls.message_type}"
