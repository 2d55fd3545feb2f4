"""The notified loop on its own, without servers: when it looks for work and when it stops."""

from __future__ import annotations

import asyncio

import asyncpg

from orderflow.notified import Listener, NotifiedLoop

LONG_POLL = 30.0  # far beyond every wait below: a test passing never waited for the poll


class Scripted(NotifiedLoop):
    """A loop whose steps are gated by the test: each step announces itself, then waits."""

    def __init__(self, *, drain_on_stop: bool = False, fail_first: bool = False) -> None:
        super().__init__(name="scripted", poll_interval=LONG_POLL, drain_on_stop=drain_on_stop)
        self.steps = 0
        self.started = asyncio.Queue[int]()
        self.release = asyncio.Queue[bool]()  # True: "more work is waiting"
        self._fail_first = fail_first

    async def step(self) -> bool:
        self.steps += 1
        await self.started.put(self.steps)
        more = await self.release.get()
        if self._fail_first and self.steps == 1:
            raise ConnectionError("database away")
        return more


async def next_step(loop: Scripted) -> int:
    return await asyncio.wait_for(loop.started.get(), timeout=5)


async def test_a_wake_during_a_step_makes_the_loop_look_again_at_once() -> None:
    loop = Scripted()
    loop.start()
    try:
        assert await next_step(loop) == 1
        loop.wake()  # a notification arrives while the first step is working
        await loop.release.put(False)  # the step found nothing more
        assert await next_step(loop) == 2  # well within the 30 s poll
    finally:
        await loop.release.put(False)
        await loop.stop()


async def test_a_wake_after_a_step_ends_the_wait() -> None:
    loop = Scripted()
    loop.start()
    try:
        await next_step(loop)
        await loop.release.put(False)
        # the loop is waiting now (or about to): a wake at any moment brings the next step
        loop.wake()
        assert await next_step(loop) == 2
    finally:
        await loop.release.put(False)
        await loop.stop()


async def test_more_work_is_done_without_a_wake() -> None:
    loop = Scripted()
    loop.start()
    try:
        await next_step(loop)
        await loop.release.put(True)
        assert await next_step(loop) == 2
    finally:
        await loop.release.put(False)
        await loop.stop()


async def test_stop_lets_the_step_finish_and_draining_goes_on_until_no_work() -> None:
    loop = Scripted(drain_on_stop=True)
    loop.start()
    await next_step(loop)
    stopping = asyncio.create_task(loop.stop())
    await loop.release.put(True)  # more was due: a draining loop takes it before stopping
    assert await next_step(loop) == 2
    assert not stopping.done()
    await loop.release.put(False)
    await asyncio.wait_for(stopping, timeout=5)
    assert loop.steps == 2


async def test_draining_looks_once_more_after_a_step_that_began_before_stop() -> None:
    loop = Scripted(drain_on_stop=True)
    loop.start()
    await next_step(loop)  # this step looked before stop() was called
    stopping = asyncio.create_task(loop.stop())
    await loop.release.put(False)
    assert await next_step(loop) == 2  # so it looks again: work may have come since
    await loop.release.put(False)
    await asyncio.wait_for(stopping, timeout=5)
    assert loop.steps == 2


async def test_stop_without_draining_ends_after_the_step_in_hand() -> None:
    loop = Scripted()
    loop.start()
    await next_step(loop)
    stopping = asyncio.create_task(loop.stop())
    await loop.release.put(True)
    await asyncio.wait_for(stopping, timeout=5)
    assert loop.steps == 1


async def test_an_error_pauses_and_stop_ends_the_pause() -> None:
    loop = Scripted(fail_first=True)
    loop.start()
    await next_step(loop)
    await loop.release.put(False)  # the step raises: the loop pauses for the poll interval
    await asyncio.wait_for(loop.stop(), timeout=5)
    assert loop.steps == 1


class ReleasedProxy:
    """A pooled connection the pool took back after the server went away."""

    def is_closed(self) -> bool:
        raise asyncpg.InterfaceError("connection has been released back to the pool")


async def test_a_listening_connection_the_pool_took_back_counts_as_lost() -> None:
    listener = Listener(lambda: None, "x_outbox", lambda _: None)  # type: ignore[arg-type,return-value]
    listener._conn = ReleasedProxy()  # type: ignore[assignment]
    assert not listener.listening
