"""Typesetting on worker processes, one per core, so contracts render in parallel.

Typst holds the GIL for much of a compile (measured by `scripts/bench_render.py`: two
threads reach about 1.3x one, two processes about 1.9x), so the pool is of processes. Each
process loads the fonts once, at its start, and keeps its renderer for every contract.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from typing import TYPE_CHECKING

from .. import domain

if TYPE_CHECKING:
    from .documents import TypstRenderer

#: The renderer of this worker process (set by `_start_worker`).
_worker_renderer: TypstRenderer | None = None


def _start_worker(renderer: TypstRenderer) -> None:
    global _worker_renderer
    _worker_renderer = renderer
    renderer.fonts()  # loaded here, not in the first contract's render


def _render_in_worker(content: domain.ContractContent) -> bytes:
    assert _worker_renderer is not None, "the pool's initializer sets the renderer"
    return _worker_renderer.render_sync(content)


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class RenderPool:
    """`render(content)` on the next free worker process, each with its own copy of the
    renderer it is given."""

    def __init__(self, renderer: TypstRenderer, *, workers: int | None = None) -> None:
        self.renderer = renderer
        self.workers = workers or default_workers()
        # spawn, not fork: a fork of a process with an event loop and database connections
        # would inherit them
        self._executor = ProcessPoolExecutor(
            self.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_worker,
            initargs=(renderer,),
        )

    async def render(self, content: domain.ContractContent) -> bytes:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, _render_in_worker, content)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
