"""Who may speak for a department on the bus."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from orderflow import refusals
from orderflow.messages import (
    Problem,
)


@dataclass(frozen=True)
class VerdictAccess:
    """Which RabbitMQ users speak for which department.

    RabbitMQ checks a message's `user_id` against the user of the connection that published
    it, but only when it is set: a message without one proves nothing and is refused.
    """

    required: bool
    users: Mapping[str, str]  # RabbitMQ user -> department
    acting: frozenset[str] = frozenset()  # users that act for any department (the console)


class Unauthorized(Exception):
    """The sender may not speak for the department; `code` is its refusal code."""

    def __init__(self, reason: str, problems: Sequence[Problem], *, code: str) -> None:
        super().__init__(reason)
        self.problems = list(problems)
        self.code = code


def authorize(
    access: VerdictAccess,
    *,
    user_id: str | None,
    department: str,
    routing_key: str | None,
    kind: str = "verdict",
) -> None:
    """Unauthorized unless the validated `user_id` may speak for `department`."""
    if routing_key is not None and routing_key != department:
        raise Unauthorized(
            f"{kind} for {department} published with routing key {routing_key!r}",
            [Problem(pointer="/department", detail=f"the routing key is {routing_key!r}")],
            code=refusals.WRONG_ROUTING_KEY,
        )
    if not access.required:
        return
    if not user_id:
        raise Unauthorized(
            f"{kind} without user_id refused: set the AMQP user_id property to the "
            "RabbitMQ user you connect as, so the broker vouches for the sender",
            [Problem(pointer="", detail="the AMQP user_id property is missing")],
            code=refusals.MISSING_USER_ID,
        )
    if user_id in access.acting:
        return
    allowed = access.users.get(user_id)
    if allowed is None:
        raise Unauthorized(
            f"{kind} refused: RabbitMQ user {user_id!r} speaks for no department",
            [Problem(pointer="", detail=f"user {user_id!r} is not a department's user")],
            code=refusals.NOT_A_DEPARTMENT_USER,
        )
    if allowed != department:
        raise Unauthorized(
            f"{kind} refused: RabbitMQ user {user_id!r} speaks for {allowed}, not {department}",
            [Problem(pointer="/department", detail=f"user {user_id!r} may act for {allowed} only")],
            code=refusals.WRONG_DEPARTMENT,
        )


def department_users(
    departments: Iterable[str], *, pattern: str, explicit: Mapping[str, str]
) -> dict[str, str]:
    """RabbitMQ user -> department: the naming convention for every department, then the
    explicit mapping (which wins)."""
    users = {pattern.format(department=d): d for d in departments}
    users.update(explicit)
    return users
