"""How fast contracts typeset: a bare serial loop against the worker pools the service can use.

    .venv/bin/python services/contracts/scripts/bench_render.py --count 60

Prints contracts per second for the serial loop, a thread pool and the service's process pool, each
sized to the cores; the service's pool should reach at least 80% of cores x serial.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from datetime import UTC, datetime

from contracts.adapters.documents import TypstRenderer, specimen
from contracts.adapters.rendering import RenderPool
from contracts.domain import ContractContent
from orderflow.messages import Language, OrderType


def contents(count: int) -> list[ContractContent]:
    kinds = [(t, lang) for t in OrderType for lang in Language]
    out = []
    for i in range(count):
        order_type, language = kinds[i % len(kinds)]
        base = specimen(order_type, language)
        out.append(
            base.model_copy(
                update={"number": f"HT-2026-{i + 1:06d}", "drafted_at": datetime.now(UTC)}
            )
        )
    return out


def timed(run: Callable[[], object], count: int) -> float:
    started = time.perf_counter()
    run()
    return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=60)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    renderer = TypstRenderer()
    batch = contents(args.count)
    renderer.render_sync(batch[0])  # fonts loaded once, outside the timing
    results: dict[str, float] = {}
    results["serial"] = timed(lambda: [renderer.render_sync(c) for c in batch], args.count)

    def pooled(executor: Executor) -> float:
        list(executor.map(renderer.render_sync, batch[: args.workers * 2]))  # warm
        return timed(lambda: list(executor.map(renderer.render_sync, batch)), args.count)

    with ThreadPoolExecutor(args.workers) as threads:
        results["threads"] = pooled(threads)

    async def service_pool() -> float:
        pool = RenderPool(TypstRenderer(), workers=args.workers)
        try:
            await asyncio.gather(*(pool.render(c) for c in batch[: args.workers * 2]))
            started = time.perf_counter()
            await asyncio.gather(*(pool.render(c) for c in batch))
            return args.count / (time.perf_counter() - started)
        finally:
            pool.close()

    results["service_pool"] = asyncio.run(service_pool())
    ideal = results["serial"] * args.workers
    for name, rate in results.items():
        print(f"{name:>13}: {rate:6.1f} contracts/s  ({rate / results['serial']:.2f}x serial)")
    print(
        json.dumps(
            {
                "workers": args.workers,
                "count": args.count,
                **results,
                "service_pool_vs_serial": results["service_pool"] / results["serial"],
                "service_pool_vs_cores_x_serial": results["service_pool"] / ideal,
            }
        )
    )


if __name__ == "__main__":
    main()
