"""Composition root of the contracts service: settings, runtime, broker, HTTP app. No I/O
here until the app's lifespan starts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from orderflow.http import create_service_app, serve
from orderflow.service import ServiceRuntime

from .adapters.documents import TypstRenderer
from .entrypoints import bus, http
from .entrypoints.renderer import RenderWorker
from .settings import Settings

SERVICE = "contracts"


def create_app(settings: Settings | None = None, renderer: TypstRenderer | None = None) -> FastAPI:
    settings = settings or Settings()  # type: ignore[call-arg]  # values come from the env
    renderer = renderer or TypstRenderer(
        template_dir=settings.templates, font_dirs=settings.font_dirs, timezone=settings.timezone
    )
    runtime = ServiceRuntime(
        service=SERVICE,
        schema="contracts",
        package="contracts",
        settings=settings,
        queues=bus.QUEUES,
    )
    bus.register(runtime, renderer)
    app = create_service_app(
        runtime,
        title="Orderflow contracts",
        description="Drafts the contract of every approved order as a PDF, numbered without "
        "gaps, and follows it to signature.",
    )
    app.include_router(http.router)
    http.install_error_handlers(app)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # every template is typeset once before the service consumes anything: an edited
        # template with a mistake, or missing fonts, stop the start instead of every draft
        await asyncio.to_thread(renderer.check)
        # documents are typeset on one worker process per core, outside any transaction
        renderer.start_workers()
        try:
            async with runtime.lifespan(app):
                worker = RenderWorker(
                    runtime,
                    renderer,
                    capacity=2 * renderer.workers,
                    attempts=settings.render_attempts,
                    lease_seconds=settings.render_lease_seconds,
                )
                worker.start()
                try:
                    yield
                finally:
                    await worker.stop()
        finally:
            renderer.close()

    app.router.lifespan_context = lifespan
    return app


def run() -> None:
    serve(SERVICE, Settings(), create_app)  # type: ignore[call-arg]  # values from the env


if __name__ == "__main__":
    run()
