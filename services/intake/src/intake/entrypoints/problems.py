"""What intake's refusals mean over HTTP: each handler and rule exception as its
problem (RFC 9457), answered by exception handlers installed once on the app, so routes
let the exceptions pass instead of catching them one by one."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from orderflow.http import Problem, problem_response

from .. import domain, handlers
from .access import not_permitted, order_not_found


def conflict_problem(exc: domain.Conflict) -> Problem:
    """A conflict that can pass: the same request may succeed later, unchanged."""
    headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
    return Problem(
        409,
        "The departments' decision has not reached intake yet"
        if isinstance(exc, domain.DecisionPending)
        else "The order changed meanwhile",
        str(exc),
        type_="urn:orderflow:problem:decision-pending"
        if isinstance(exc, domain.DecisionPending)
        else "urn:orderflow:problem:conflict",
        headers=headers,
        extra={
            "current_status": exc.status.value,
            "current_revision": exc.revision,
            "retryable": True,
        },
    )


def rule_problem(exc: domain.RuleViolation) -> Problem:
    if isinstance(exc, domain.SelfCheckFailed) and exc.invalid:
        return Problem(
            422,
            "Invalid request",
            f"{len(exc.problems)} problem(s) in the request: {exc.invalid} field(s) of the "
            "wrong type, and the self-check's findings in the rest",
            type_="urn:orderflow:problem:invalid-request",
            errors=exc.problems,
        )
    if isinstance(exc, domain.SelfCheckFailed):
        return Problem(
            422,
            "The order did not pass the self-check",
            f"{len(exc.problems)} problem(s) to fix before the order can be submitted",
            type_="urn:orderflow:problem:self-check-failed",
            errors=exc.problems,
        )
    if isinstance(exc, domain.StaleVersion):
        return Problem(
            409,
            "The order changed since it was read",
            str(exc),
            type_="urn:orderflow:problem:stale-revision",
            headers={"ETag": exc.current},
            extra={"current_revision": exc.revision, "current_etag": exc.current},
        )
    if isinstance(exc, domain.FileRefused):
        return Problem(
            exc.status,
            "File not accepted" if exc.status == 415 else "File does not match its type",
            str(exc),
            type_="urn:orderflow:problem:file-refused",
            errors=exc.problems,
        )
    extra: dict[str, Any] = {}
    if isinstance(exc, domain.NotEditable | domain.NotWithdrawable):
        extra["current_status"] = exc.status.value
    if isinstance(exc, domain.AlreadySubmitted):
        extra["revision"] = exc.revision
    return Problem(
        409,
        "Not allowed in the order's current state",
        str(exc),
        type_="urn:orderflow:problem:order-state",
        extra=extra,
    )


def revision_not_found(exc: handlers.RevisionNotFound) -> Problem:
    return Problem(
        404,
        "Revision not found",
        str(exc),
        type_="urn:orderflow:problem:revision-not-found",
        extra={"revision": exc.revision},
    )


def attachment_not_found(exc: handlers.AttachmentNotFound) -> Problem:
    return Problem(
        404,
        "File not found",
        str(exc),
        type_="urn:orderflow:problem:attachment-not-found",
    )


def idempotency_key_reused(exc: handlers.IdempotencyKeyReused) -> Problem:
    return Problem(
        409,
        "Idempotency-Key already used for another request",
        str(exc),
        type_="urn:orderflow:problem:idempotency-key-reused",
        extra={"order_id": str(exc.order_id)},
    )


def problem_for(exc: Exception) -> Problem:
    """The problem a handler's or a rule's exception is answered with."""
    if isinstance(exc, handlers.OrderNotFound):
        return order_not_found(exc.order_id)
    if isinstance(exc, handlers.NotPermitted):
        return not_permitted(exc.order_id)
    if isinstance(exc, handlers.RevisionNotFound):
        return revision_not_found(exc)
    if isinstance(exc, handlers.AttachmentNotFound):
        return attachment_not_found(exc)
    if isinstance(exc, handlers.IdempotencyKeyReused):
        return idempotency_key_reused(exc)
    if isinstance(exc, domain.RuleViolation):
        return rule_problem(exc)
    if isinstance(exc, domain.Conflict):
        return conflict_problem(exc)
    raise TypeError(f"no problem for {type(exc).__name__}") from exc


#: Every exception a route lets pass to be answered as a problem.
ANSWERED: tuple[type[Exception], ...] = (
    handlers.OrderNotFound,
    handlers.NotPermitted,
    handlers.RevisionNotFound,
    handlers.AttachmentNotFound,
    handlers.IdempotencyKeyReused,
    domain.RuleViolation,
    domain.Conflict,
)


async def _answer(request: Request, exc: Exception) -> JSONResponse:
    return problem_response(problem_for(exc), request)


def install(app: FastAPI) -> None:
    """Answer intake's exceptions as problems, for every route of the app."""
    for kind in ANSWERED:
        app.add_exception_handler(kind, _answer)
