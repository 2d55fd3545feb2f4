"""Composition root of the review-router: settings, review policy, runtime, broker, deadline
timers, HTTP app. The policy file is read and validated here, so a bad one stops the router
before it connects to anything; no other I/O until the app's lifespan starts."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from orderflow.http import create_service_app, serve
from orderflow.service import ServiceRuntime

from . import domain, handlers, policy
from .entrypoints import bus, http
from .settings import Settings
from .timers import TimerLoop

SERVICE = "review-router"


def rules_of(settings: Settings) -> handlers.Rules:
    """The review policy and who may speak for which department; PolicyError if the policy
    file is unusable."""
    review_policy = policy.load(settings.policy_file)
    departments = bus.departments(review_policy.reviewing_departments)
    return handlers.Rules(
        policy=review_policy,
        access=domain.VerdictAccess(
            required=settings.require_verdict_user,
            users=domain.department_users(
                departments,
                pattern=settings.verdict_user_pattern,
                explicit=settings.verdict_users,
            ),
            acting=frozenset(settings.verdict_acting_users),
        ),
    )


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()  # type: ignore[call-arg]  # values come from the env
    rules = rules_of(settings)
    runtime = ServiceRuntime(
        service=SERVICE,
        schema="review_router",
        package="review_router",
        settings=settings,
        queues=bus.queues(bus.departments(rules.policy.reviewing_departments)),
        outside_producers=bus.department_producers(rules.access),
        declares_dead_letter_queues=True,
    )
    bus.register(runtime, rules)
    timers = TimerLoop(
        lambda: runtime.pool,
        interval=settings.timer_poll_interval,
        batch=settings.timer_batch,
    )
    app = create_service_app(
        runtime,
        title="Orderflow review-router",
        description=(
            "Sends each submitted revision of an order to its reviewing departments, stage by "
            "stage as the review policy says, collects their annotations and verdicts, "
            "reminds and escalates late reviews, and decides: approved, or changes requested."
        ),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # the timers run only while the pool and the outbox relay do
        async with runtime.lifespan(app):
            timers.start()
            try:
                yield
            finally:
                await timers.stop()

    app.router.lifespan_context = lifespan
    app.state.rules = rules
    app.include_router(http.router)
    return app


def run() -> None:
    try:
        serve(SERVICE, Settings(), create_app)  # type: ignore[call-arg]  # values from the env
    except policy.PolicyError as exc:
        # a bad policy file stops the router before it connects to anything
        print(f"{SERVICE}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    run()
