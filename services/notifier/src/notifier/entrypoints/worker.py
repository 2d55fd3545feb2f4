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

import structlog

from orderflow.db import Pool
from orderflow.notified import Listener, NotifiedLoop

from .. import handlers
from ..adapters.outgoing import Channel

log = structlog.get_logger(__name__)

SWEEP_EVERY = 60.0


def notify_channel(schema: str) -> str:
    return f"{schema}_deliveries"


class _ChannelWorkers(NotifiedLoop):
    """`concurrency` workers sending one channel's due deliveries, one at a time each."""

    def __init__(
        self,
        pool: Callable[[], Pool],
        channel: Channel,
        *,
        policy: handlers.DeliveryPolicy,
        concurrency: int,
        poll_interval: float,
    ) -> None:
        super().__init__(
            name=f"deliver-{channel.name}",
            poll_interval=poll_interval,
            workers=concurrency,
            stop_timeout=policy.timeout + 2,  # a send in flight is bounded by its timeout
        )
        self._pool = pool
        self._channel = channel
        self._policy = policy

    async def step(self) -> bool:
        return await handlers.deliver_next(self._pool(), self._channel, policy=self._policy)


class _Sweep(NotifiedLoop):
    """Now and then: listen again after the database was away, and end the deliveries of
    channels no longer configured."""

    def __init__(
        self, pool: Callable[[], Pool], listener: Listener, channels: list[str], *, every: float
    ) -> None:
        super().__init__(name="deliveries-sweep", poll_interval=every, listener=listener)
        self._pool = pool
        self._channels = channels

    async def step(self) -> bool:
        failed = await handlers.fail_unroutable(self._pool(), channels=self._channels)
        if failed:
            log.warning("deliveries on unconfigured channels marked failed", count=failed)
        return False


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
        self._channels = {c.name: c for c in channels}
        self._workers = {
            c.name: _ChannelWorkers(
                pool, c, policy=policy, concurrency=concurrency, poll_interval=poll_interval
            )
            for c in channels
        }
        self._listener = Listener(
            pool,
            notify_channel(schema),
            lambda payload: self.wake(payload or None),
            on_lost=self._on_listener_lost,
        )
        self._sweep = _Sweep(
            pool, self._listener, self.channels, every=min(SWEEP_EVERY, poll_interval * 10)
        )

    @property
    def channels(self) -> list[str]:
        return list(self._channels)

    async def start(self) -> None:
        # listening before the first look, so nothing committed in between waits for a poll
        await self._listener.ensure()
        for workers in self._workers.values():
            workers.start()
        self._sweep.start()
        log.info("delivery worker started", channels=self.channels)

    async def stop(self) -> None:
        """Let sends in flight finish (each is bounded by its timeout), then stop."""
        await asyncio.gather(*(w.stop() for w in self._workers.values()), self._sweep.stop())
        await self._listener.close()
        for channel in self._channels.values():
            with contextlib.suppress(Exception):
                await channel.close()
        log.info("delivery worker stopped")

    def wake(self, channel: str | None = None) -> None:
        for name, workers in self._workers.items():
            if channel is None or channel == name:
                workers.wake()

    def _on_listener_lost(self) -> None:
        # notifications sent while away are gone: look for work at once, and listen again
        self._sweep.wake()
        self.wake()
