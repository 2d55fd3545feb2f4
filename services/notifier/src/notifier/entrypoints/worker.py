"""The delivery worker: sends due email and webhook deliveries, in this process, beside the
bus consumers and the HTTP API.

Each channel (email, and each robot) has its own workers, so a slow or dead robot only ever
holds up its own messages. Replicas share the work through `FOR UPDATE SKIP LOCKED`;
LISTEN/NOTIFY wakes a channel as soon as a delivery for it is committed, and polling backs
it up (a retry coming due, a lost notification).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence

import asyncpg
import structlog

from orderflow.db import Connection, Pool

from .. import handlers
from ..adapters.outgoing import Channel

log = structlog.get_logger(__name__)

SWEEP_EVERY = 60.0


def notify_channel(schema: str) -> str:
    return f"{schema}_deliveries"


class DeliveryWorker:
    def __init__(
        self,
        pool: Callable[[], Pool],
        channels: Sequence[Channel],
        *,
        policy: handlers.DeliveryPolicy,
        concurrency: int,
        poll_interval: float,
        schema: str = "notifier",
    ) -> None:
        self._pool = pool
        self._channels = {c.name: c for c in channels}
        self._policy = policy
        self._concurrency = concurrency
        self._poll = poll_interval
        self._schema = schema
        self._wake = {name: asyncio.Event() for name in self._channels}
        self._tasks: list[asyncio.Task[None]] = []
        self._listener: Connection | None = None
        self._stopping = False
        self._stopped = asyncio.Event()

    @property
    def channels(self) -> list[str]:
        return list(self._channels)

    async def start(self) -> None:
        await self._listen()
        for name, channel in self._channels.items():
            for i in range(self._concurrency):
                self._tasks.append(
                    asyncio.create_task(self._run(channel), name=f"deliver-{name}-{i}")
                )
        self._tasks.append(asyncio.create_task(self._sweep(), name="deliveries-sweep"))
        log.info("delivery worker started", channels=self.channels)

    async def stop(self) -> None:
        """Let sends in flight finish (each is bounded by its timeout), then stop."""
        self._stopping = True
        self._stopped.set()
        for event in self._wake.values():
            event.set()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=self._policy.timeout + 2)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        self._tasks.clear()
        await self._unlisten()
        for channel in self._channels.values():
            with contextlib.suppress(Exception):
                await channel.close()
        log.info("delivery worker stopped")

    def wake(self, channel: str | None = None) -> None:
        for name, event in self._wake.items():
            if channel is None or channel == name:
                event.set()

    async def _listen(self) -> None:
        if self._listener is not None and not self._listener.is_closed():
            return
        try:
            listener = await self._pool().acquire()
            self._listener = listener
            await listener.add_listener(notify_channel(self._schema), self._on_notify)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("deliveries listen failed, polling only", error=repr(exc))
            await self._unlisten()

    async def _unlisten(self) -> None:
        conn, self._listener = self._listener, None
        if conn is None:
            return
        with contextlib.suppress(Exception):
            await conn.remove_listener(notify_channel(self._schema), self._on_notify)
        with contextlib.suppress(Exception):
            await self._pool().release(conn)

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        self.wake(str(payload) if payload else None)

    async def _run(self, channel: Channel) -> None:
        wake = self._wake[channel.name]
        while not self._stopping:
            try:
                worked = await handlers.deliver_next(self._pool(), channel, policy=self._policy)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database is away: back off and look again
                log.warning("delivery worker error", channel=channel.name, error=repr(exc))
                worked = False
            if worked:
                continue
            wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout=self._poll)

    async def _sweep(self) -> None:
        while not self._stopping:
            try:
                await self._listen()  # again, after the database was away
                failed = await handlers.fail_unroutable(self._pool(), channels=self.channels)
                if failed:
                    log.warning("deliveries on unconfigured channels marked failed", count=failed)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("deliveries sweep error", error=repr(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._stopped.wait(), timeout=min(SWEEP_EVERY, self._poll * 10)
                )
