"""Composition root of the review-router: settings, runtime, broker, HTTP app. No I/O here
until the app's lifespan starts."""

from __future__ import annotations

import uvicorn
from fastapi import FastAPI

from orderflow.http import create_service_app
from orderflow.logging import configure_logging
from orderflow.service import ServiceRuntime

from .entrypoints import bus, http
from .settings import Settings

SERVICE = "review-router"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()  # type: ignore[call-arg]  # values come from the env
    runtime = ServiceRuntime(
        service=SERVICE,
        schema="review_router",
        package="review_router",
        settings=settings,
        queues=bus.QUEUES,
    )
    bus.register(runtime)
    app = create_service_app(
        runtime,
        title="Orderflow review-router",
        description=(
            "Sends each submitted revision of an order to its reviewing departments, stage by "
            "stage, collects their verdicts and decides: approved, or changes requested."
        ),
    )
    app.include_router(http.router)
    return app


def run() -> None:
    settings = Settings()  # type: ignore[call-arg]
    configure_logging(SERVICE, level=settings.log_level, json=settings.log_json)
    uvicorn.run(
        create_app(settings),
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        timeout_graceful_shutdown=int(settings.graceful_timeout),
    )


if __name__ == "__main__":
    run()
