"""Publishing with the guarantees the outbox relies on: publisher confirms, persistent
messages, mandatory routing (an unroutable message is an error, not a silent drop) and a
timeout, because a publish on a lost connection can otherwise hang."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import datetime
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import aio_pika
import aiormq
import structlog
from aio_pika.abc import AbstractRobustChannel, AbstractRobustConnection
from aiormq.abc import DeliveredMessage

log = structlog.get_logger(__name__)


class PublishError(Exception):
    """The broker did not confirm the message (returned, nacked, timed out, or away)."""


class Publisher:
    def __init__(self, url: str, *, app_id: str, timeout: float = 10.0) -> None:
        self._url = url
        self._app_id = app_id
        # every message carries the connection's user: RabbitMQ refuses a mismatch, so a
        # consumer can trust it to name the producer
        self.user_id = unquote(urlsplit(url).username or "") or "guest"
        self._timeout = timeout
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractRobustChannel | None = None

    async def connect(self) -> None:
        self._connection = await aio_pika.connect_robust(
            self._url,
            client_properties={"connection_name": f"{self._app_id}-publisher"},
            # back quickly after a broker restart: the outbox waits for this connection
            reconnect_interval=1.0,
        )
        self._channel = await self._connection.channel(
            publisher_confirms=True, on_return_raises=True
        )

    @property
    def channel(self) -> AbstractRobustChannel:
        if self._channel is None:
            raise PublishError("publisher is not connected")
        return self._channel

    @property
    def connection(self) -> AbstractRobustConnection:
        if self._connection is None:
            raise PublishError("publisher is not connected")
        return self._connection

    @property
    def is_connected(self) -> bool:
        return (
            self._connection is not None
            and not self._connection.is_closed
            and self._channel is not None
            and not self._channel.is_closed
        )

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()
        self._connection = None
        self._channel = None

    async def publish(
        self,
        *,
        exchange: str,
        routing_key: str,
        body: bytes,
        message_id: str,
        message_type: str,
        correlation_id: str | None = None,
        reply_to: str | None = None,
        headers: Mapping[str, Any] | None = None,
        timestamp: datetime | None = None,
        mandatory: bool = True,
        user_id: str | None = None,
    ) -> None:
        message = aio_pika.Message(
            body,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=message_id,
            correlation_id=correlation_id,
            reply_to=reply_to,
            type=message_type,
            app_id=self._app_id,
            timestamp=timestamp,
            headers=dict(headers or {}),
            user_id=user_id or self.user_id,
        )
        try:
            # one timeout over both steps (the robust channel waits while it reconnects),
            # with no task per publish: the calls of a batch reach the channel's lock, and
            # so the socket, in the order they were made
            async with asyncio.timeout(self._timeout):
                # the concrete channel: its basic_publish takes `wait`, the abstract one not
                channel = cast(aiormq.Channel, await self.channel.get_underlay_channel())
                # wait=False: no socket drain per message, so a batch's frames go out
                # together; the broker's confirm (or return) is still awaited
                confirmation = await channel.basic_publish(
                    message.body,
                    exchange=exchange,
                    routing_key=routing_key,
                    properties=message.properties,
                    mandatory=mandatory,
                    wait=False,
                )
        except (aio_pika.exceptions.DeliveryError, aio_pika.exceptions.PublishError) as exc:
            raise PublishError(
                f"{exchange or '(default)'}/{routing_key}: refused by the broker "
                f"(unroutable or nacked): {exc!r}"
            ) from exc
        except TimeoutError as exc:
            raise PublishError(
                f"{exchange}/{routing_key}: no confirm within {self._timeout}s"
            ) from exc
        except (aio_pika.exceptions.AMQPError, ConnectionError, RuntimeError) as exc:
            raise PublishError(f"{exchange}/{routing_key}: {exc!r}") from exc
        if isinstance(confirmation, DeliveredMessage):
            raise PublishError(f"{exchange}/{routing_key}: returned by the broker as unroutable")
