"""RFC 9457 problem details, the one error shape of every HTTP answer (in its own module so
that the auth package and the HTTP edge can both raise it)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, Field

from .messages import Problem as MessageProblem

PROBLEM_JSON = "application/problem+json"


# the same shape in HTTP problem details and in command replies
FieldProblem = MessageProblem


class ProblemDetails(BaseModel):
    """RFC 9457 problem details; `errors` lists every field problem at once."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[FieldProblem] = Field(default_factory=list)


class Problem(Exception):
    """Raise to answer with problem+json."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str | None = None,
        *,
        type_: str = "about:blank",
        errors: Sequence[FieldProblem] = (),
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail or title)
        self.status = status
        self.title = title
        self.detail = detail
        self.type = type_
        self.errors = list(errors)
        self.headers = headers
        self.extra = extra or {}
