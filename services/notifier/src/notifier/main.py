"""Composition root of the notifier: settings, contacts, templates, channels, runtime,
broker, delivery worker, HTTP app. Nothing connects until the app's lifespan starts; the
contacts file and the templates are read and checked here, so a mistake in either stops
the service at once with the problem named."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import FastAPI

from orderflow.http import create_service_app, serve
from orderflow.logging import register_secrets
from orderflow.service import ServiceRuntime

from . import contacts
from .adapters.mail import Mailer
from .adapters.outgoing import Channel
from .adapters.templates import Templates
from .adapters.webhooks import WebhookChannel
from .entrypoints import bus, http
from .entrypoints.worker import DeliveryWorker
from .handlers import DeliveryPolicy, Notifying
from .settings import Settings

SERVICE = "notifier"


def build_channels(settings: Settings, directory: contacts.Directory) -> list[Channel]:
    """Email when SMTP is configured, and one channel per robot in the contacts file."""
    channels: list[Channel] = []
    if settings.email_enabled:
        channels.append(Mailer(settings))
    for name, config in directory.webhooks.items():
        channels.append(
            WebhookChannel(
                name,
                config,
                timeout=settings.delivery_timeout,
                rate_limit=config.rate_limit or settings.rate_limit(config.kind),
                policy=settings.outbound_policy,
            )
        )
    return channels


def load_directory(settings: Settings) -> contacts.Directory:
    """The contacts file, its secrets kept out of the logs; development ones refused in
    production."""
    directory = contacts.load(settings.contacts_file)
    register_secrets([*settings.secret_values(), *directory.secret_values()])
    if settings.environment == "production":
        problems = directory.development_secrets()
        if problems:
            raise contacts.ContactsError(
                f"{settings.contacts_file}: ORDERFLOW_ENVIRONMENT is production, but "
                + "; ".join(problems)
            )
    return directory


def deliveries(
    app: FastAPI, runtime: ServiceRuntime, settings: Settings, directory: contacts.Directory
) -> Callable[[Any], AbstractAsyncContextManager[None]]:
    """The app's lifespan: the runtime, and the delivery worker inside it."""
    policy = DeliveryPolicy(
        max_attempts=settings.delivery_max_attempts,
        backoff_base=settings.delivery_backoff_base,
        backoff_max=settings.delivery_backoff_max,
        timeout=settings.delivery_timeout,
    )

    @asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        async with runtime.lifespan():
            worker = DeliveryWorker(
                lambda: runtime.pool,
                # built at start, not before: each robot's HTTP client belongs to the running loop
                build_channels(settings, directory),
                policy=policy,
                concurrency=settings.delivery_concurrency,
                poll_interval=settings.delivery_poll_interval,
            )
            app.state.delivery_worker = worker
            await worker.start()
            try:
                yield
            finally:
                # sends in flight finish first; the runtime's relay then publishes their events
                await worker.stop()

    return lifespan


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()  # type: ignore[call-arg]  # values come from the env
    directory = load_directory(settings)
    templates = Templates(settings.template_dir)
    templates.check()
    deps = Notifying(
        directory=directory,
        templates=templates,
        console=settings.console_base_url,
        email_enabled=settings.email_enabled,
    )
    runtime = ServiceRuntime(
        service=SERVICE, schema="notifier", package="notifier", settings=settings, queues=bus.QUEUES
    )
    bus.register(runtime, deps)
    app = create_service_app(
        runtime,
        title="Orderflow notifier",
        description="Tells salespeople and reviewers what happened to their orders: in-app "
        "inbox, email and chat robots, delivered with retries.",
    )
    http.install(app)
    app.router.lifespan_context = deliveries(app, runtime, settings, directory)
    return app


def run() -> None:
    serve(SERVICE, Settings(), create_app)  # type: ignore[call-arg]  # values from the env


if __name__ == "__main__":
    run()
