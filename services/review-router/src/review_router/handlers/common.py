"""What every handler decides with, and the checks every department message passes: who
sent it, whether they may speak for the department, and which round it belongs to."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from orderflow import refusals
from orderflow.consumer import PermanentError
from orderflow.messages import Problem

from .. import domain
from .. import policy as policies
from ..store import LoadedRound, Store


@dataclass(frozen=True)
class Rules:
    """What the handlers decide with, built once at start: the review policy, and who may
    speak for which department."""

    policy: policies.Policy
    access: domain.VerdictAccess


@dataclass(frozen=True)
class Sender:
    """Who published a department message, as the broker delivered it."""

    message_id: str
    user_id: str | None
    routing_key: str | None


@contextmanager
def refused() -> Iterator[None]:
    """A department message that can never be applied is refused (dead-lettered with its
    code and problems), not retried."""
    try:
        yield
    except (domain.VerdictMismatch, domain.Unauthorized) as exc:
        raise PermanentError(str(exc), exc.problems, code=exc.code) from exc


def authorize(rules: Rules, sender: Sender, *, department: str, kind: str) -> None:
    with refused():
        domain.authorize(
            rules.access,
            user_id=sender.user_id,
            department=department,
            routing_key=sender.routing_key,
            kind=kind,
        )


async def round_of(store: Store, review_id: uuid.UUID) -> LoadedRound:
    round_id = await store.round_of_review(review_id=review_id)
    if round_id is None:
        raise PermanentError(
            f"unknown review_id {review_id}",
            [Problem(pointer="/review_id", detail="no review was requested with this id")],
            code=refusals.UNKNOWN_REVIEW,
        )
    return await store.lock_round(round_id=round_id)
