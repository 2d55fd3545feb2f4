"""Optimistic concurrency: the ETag names the current revision and intake's edit counter;
revisions under concurrency: a conflict is answered, and the sender may try again."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .statuses import RuleViolation, Status


def etag(*, revision: int, version: int) -> str:
    return f'"r{revision}.{version}"'


class StaleVersion(RuleViolation):
    """The request was based on an older state of the order than the current one."""

    def __init__(self, *, sent: str, current: str, revision: int) -> None:
        self.sent = sent
        self.current = current
        self.revision = revision
        super().__init__(
            f"the order changed since it was read: If-Match {sent} but it is now {current} "
            f"(revision {revision}); read it again, apply your changes to that, and retry"
        )


def if_match_names(header: str, current: str) -> bool:
    """Whether an If-Match list names the current ETag (strong comparison, RFC 9110: a
    weak tag never matches; `*` is not accepted here, so nobody overwrites unseen)."""
    tags = [t.strip() for t in header.split(",")]
    return any(t == current for t in tags if t and not t.startswith("W/"))


def check_version(if_match: str | None, *, revision: int, version: int) -> None:
    """A request with If-Match must name the current ETag; one without is not checked."""
    if if_match is None:
        return
    current = etag(revision=revision, version=version)
    if not if_match_names(if_match, current):
        raise StaleVersion(sent=if_match, current=current, revision=revision)


# ---------------------------------------------------------------------------------------
# Revisions under concurrency: a conflict is answered, and the sender may try again.

#: The departments are deciding: intake may not have heard their decision yet.
DECIDING: frozenset[Status] = frozenset({Status.SUBMITTED, Status.IN_REVIEW})


class Conflict(Exception):
    """The request met the order in a state that may pass: reading the order again and
    retrying can succeed (409 over HTTP, a retryable reply on the bus). Not a
    `RuleViolation`: nothing is wrong with the document."""

    retry_after: int | None = None

    def __init__(self, message: str, *, status: Status, revision: int) -> None:
        self.status = status
        self.revision = revision
        super().__init__(message)


class DecisionPending(Conflict):
    """A revision for an order under review: the departments may have sent it back already
    without intake having heard; the caller waits for the decision and tries again."""

    def __init__(self, *, status: Status, revision: int, waited: float | None = None) -> None:
        self.waited = waited
        message = (
            f"the order is {status.value} (revision {revision}) and the departments' decision "
            "has not reached intake"
        )
        if waited is not None:
            message += (
                f" within {waited:g} s; send the revision again when the order is "
                "changes_requested (order.changes_requested) — the document needs no change "
                "for this"
            )
            self.retry_after = max(1, round(waited / 4))
        super().__init__(message, status=status, revision=revision)


class StaleRevision(Conflict):
    """The sender based its revision on an older revision than the order's current one:
    another revision came first."""

    def __init__(self, *, revises: int, status: Status, revision: int) -> None:
        self.revises = revises
        super().__init__(
            f"the order changed: the revision sent revises revision {revises}, but the order "
            f"is now at revision {revision} ({status.value}); read it again, apply your "
            "changes to that, and send them with revises "
            f"{revision}",
            status=status,
            revision=revision,
        )


class UnknownRevision(RuleViolation):
    def __init__(self, *, revises: int, revision: int) -> None:
        self.revises = revises
        super().__init__(
            f"revises names revision {revises}, but the order has revisions up to {revision}"
        )


def check_revises(revises: int | None, *, status: Status, current_revision: int) -> None:
    """A revision based on `revises` (None: not said) may follow the current revision only
    if it was made from it."""
    if revises is None:
        return
    if revises > current_revision:
        raise UnknownRevision(revises=revises, revision=current_revision)
    if revises < current_revision:
        raise StaleRevision(revises=revises, status=status, revision=current_revision)


def check_decided(status: Status, *, current_revision: int) -> None:
    """Before a revision: under review, the decision is awaited (it may be on its way)."""
    if status in DECIDING:
        raise DecisionPending(status=status, revision=current_revision)


def decision_arrived(state: Mapping[str, Any] | None, *, status: Status, revision: int) -> bool:
    """Whether the order moved on from the state a revision found it in."""
    return state is None or state["status"] != status.value or state["current_revision"] != revision
