"""Composition root of intake: settings, runtime, broker, HTTP app. No I/O here until the
app's lifespan starts."""

from __future__ import annotations

from fastapi import FastAPI

from orderflow import busaccess
from orderflow.auth.routes import admin as admin_routes
from orderflow.http import create_service_app, serve
from orderflow.service import ServiceRuntime

from .adapters.blobs import BlobStore, PostgresBlobStore
from .entrypoints import attachments, bus, http, imports, problems
from .settings import Settings

SERVICE = "intake"


def create_app(settings: Settings | None = None, *, blobs: BlobStore | None = None) -> FastAPI:
    settings = settings or Settings()  # type: ignore[call-arg]  # values come from the env
    runtime = ServiceRuntime(
        service=SERVICE,
        schema="intake",
        package="intake",
        settings=settings,
        queues=bus.QUEUES,
        outside_producers={busaccess.SUBMIT_TYPE: settings.submitter_users},
    )
    app = create_service_app(
        runtime,
        title="Orderflow intake",
        description=(
            "Orders, their revisions and files: create, attach, self-check, submit, "
            "withdraw, follow the review, compare revisions, read the timeline, import."
        ),
    )
    # the business day, for the self-check; one clock for HTTP and bus, replaceable in tests
    app.state.today = settings.today
    app.state.settings = settings
    # where attachment bytes live; PostgreSQL unless another store is given
    app.state.blobs = blobs or PostgresBlobStore()
    bus.register(
        runtime,
        today=lambda: app.state.today(),
        decision_wait=lambda: app.state.settings.revision_decision_wait,
        settings=lambda: app.state.settings,
        blobs=lambda: app.state.blobs,
    )
    # intake's refusals (rules, conflicts, what is not found) answered as problems
    problems.install(app)
    app.include_router(http.router)
    app.include_router(imports.router)
    app.include_router(attachments.router)
    # accounts and API keys: on the console's host
    app.include_router(admin_routes)
    return app


def run() -> None:
    serve(SERVICE, Settings(), create_app)  # type: ignore[call-arg]  # values from the env


if __name__ == "__main__":
    run()
