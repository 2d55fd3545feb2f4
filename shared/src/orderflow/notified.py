"""Background loops woken by PostgreSQL's LISTEN/NOTIFY, with polling as the back-up.

The outbox relay, the router's review timers and the notifier's delivery workers all do
the same: work until nothing is left, then sleep until a notification on a channel (a
transaction committed new work) or the poll interval (a retry came due, a notification was
missed while the listening connection was away), and stop cleanly. `NotifiedLoop` is that
loop once; a subclass says what one step of work is.

The wake-up flag is cleared *before* each step, never after: a notification that arrives
while a step runs then makes the loop look again at once, instead of waiting for the poll.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
from collections.abc import Callable

import asyncpg
import structlog

from .db import Connection, Pool

log = structlog.get_logger(__name__)

#: how long the listener waits for a pooled connection before polling alone for a while
LISTEN_ACQUIRE_TIMEOUT = 5.0


class Listener:
    """LISTEN on one channel over a connection held for that alone (taken from the pool, so
    it has the pool's settings), calling `on_notify(payload)` for each notification.

    `ensure()` listens again when the connection was lost; a loss also calls `on_lost`, so
    the loop looks for work at once (notifications sent while away are gone)."""

    def __init__(
        self,
        pool: Callable[[], Pool],
        channel: str,
        on_notify: Callable[[str], None],
        *,
        on_lost: Callable[[], None] | None = None,
    ) -> None:
        self._pool = pool
        self.channel = channel
        self._on_notify = on_notify
        self._on_lost = on_lost
        self._conn: Connection | None = None

    @property
    def listening(self) -> bool:
        if self._conn is None:
            return False
        try:
            return not self._conn.is_closed()
        except asyncpg.InterfaceError:  # the pool took the lost connection back already
            return False

    async def ensure(self) -> bool:
        """Listen if not already; False (and logged) when the database is away."""
        if self.listening:
            return True
        await self.close()
        try:
            conn = await self._pool().acquire(timeout=LISTEN_ACQUIRE_TIMEOUT)
            self._conn = conn
            conn.add_termination_listener(self._terminated)
            await conn.add_listener(self.channel, self._notified)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("listen failed, polling only", channel=self.channel, error=repr(exc))
            await self.close()
            return False
        return True

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        with contextlib.suppress(Exception):
            conn.remove_termination_listener(self._terminated)
        with contextlib.suppress(Exception):
            await conn.remove_listener(self.channel, self._notified)
        with contextlib.suppress(Exception):
            await self._pool().release(conn)

    def _notified(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        self._on_notify(str(payload) if payload else "")

    def _terminated(self, _conn: object) -> None:
        if self._on_lost is not None:
            self._on_lost()


class NotifiedLoop(abc.ABC):
    """`workers` tasks each running `step()` until it reports no more work, then waiting for
    `wake()` or `poll_interval`. `stop()` lets each task finish its step; with
    `drain_on_stop` the tasks go on until no work is left (the relay publishes what is due).
    """

    def __init__(
        self,
        *,
        name: str,
        poll_interval: float,
        listener: Listener | None = None,
        workers: int = 1,
        drain_on_stop: bool = False,
        stop_timeout: float = 10.0,
    ) -> None:
        self.name = name
        self._poll = poll_interval
        self.listener = listener
        self._workers = workers
        self._drain_on_stop = drain_on_stop
        self._stop_timeout = stop_timeout
        self._wake = asyncio.Event()
        self._stopped = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    @abc.abstractmethod
    async def step(self) -> bool:
        """Do one piece of work; True when more may be waiting right now."""

    @property
    def stopping(self) -> bool:
        return self._stopped.is_set()

    def start(self) -> None:
        self._stopped.clear()
        self._tasks = [
            asyncio.create_task(self._run(), name=f"{self.name}-{i}" if i else self.name)
            for i in range(self._workers)
        ]

    def wake(self) -> None:
        self._wake.set()

    async def stop(self) -> None:
        self._stopped.set()
        self._wake.set()
        if self._tasks:
            # shielded by asyncio.wait: a task past the timeout is cancelled, not abandoned
            _, pending = await asyncio.wait(self._tasks, timeout=self._stop_timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        self._tasks = []
        if self.listener is not None:
            await self.listener.close()

    async def _run(self) -> None:
        while not self.stopping or self._drain_on_stop:
            self._wake.clear()  # before the step: a notice during it means "look again"
            began_stopping = self.stopping
            try:
                if self.listener is not None and not self.stopping:
                    await self.listener.ensure()
                more = await self.step()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database or broker is away: pause, then again
                # a lost listening connection is taken up by `ensure()` at the next turn
                log.warning(f"{self.name} error", error=repr(exc))
                if self.stopping:
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopped.wait(), timeout=self._poll)
                continue
            if self.stopping and not more:
                if began_stopping or not self._drain_on_stop:
                    return
                continue  # this step looked before stop(): what came after must go too
            if not more:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=self._poll)
