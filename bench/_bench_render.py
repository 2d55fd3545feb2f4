"""The ceiling for contracts: how many agreement PDFs a bare loop typesets a second with the
contracts service's own renderer and templates, in one process and in a process pool of
one worker per core. The same example order as the throughput run's, drafted as the
service drafts it."""

from __future__ import annotations

import multiprocessing
import os
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime

from contracts import domain
from contracts.adapters.documents import TypstRenderer
from orderflow.messages import (
    Decision,
    DepartmentFeedback,
    OrderApproved,
    OrderDocument,
    Reviewer,
    Totals,
)
from orderflow_testkit.testing import example_order

SELLER = domain.Party(name="Orderflow Test Seller Ltd.")


def contract(example: str = "order-service") -> domain.ContractContent:
    """The example order's contract, as the contracts service drafts it on approval."""
    order = OrderDocument.model_validate(example_order(example))
    now = datetime.now(UTC)
    approved = OrderApproved(
        order_id=uuid.uuid4(),
        revision=1,
        order=order,
        totals=Totals.of(order),
        approvals=[
            DepartmentFeedback(
                department=d, decision=Decision.APPROVE, reviewer=Reviewer(id=f"{d}.bench")
            )
            for d in ("supervisor", "service_delivery", "finance")
        ],
        approved_at=now,
    )
    number = domain.format_number(domain.DEFAULT_NUMBER_PATTERN, year=now.year, seq=1)
    return domain.draft(approved, number=number, seller=SELLER, drafted_at=now)


def render_loop(seconds: float) -> tuple[int, float]:
    """Contracts typeset in about `seconds` (after one warm-up that loads the fonts), and
    the seconds it took. Each has its own number, as every contract the service drafts:
    Typst memoizes whole compilations, so typesetting the same input again costs about a
    seventh of a new contract and would overstate the ceiling."""
    renderer = TypstRenderer()
    content = contract()
    renderer.render_sync(content)
    count = 0
    began = time.perf_counter()
    while time.perf_counter() - began < seconds:
        count += 1
        renderer.render_sync(content.model_copy(update={"number": f"{content.number}-{count}"}))
    return count, time.perf_counter() - began


def render_rates(seconds: float) -> dict[str, float | int]:
    """PDFs a second: one process, then a pool of os.cpu_count() processes running at once."""
    count, elapsed = render_loop(seconds)
    workers = os.cpu_count() or 1
    # spawned, not forked: a fork of a process that has typeset (Typst's threads) can hang
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        results = list(pool.map(render_loop, [seconds] * workers))
    return {
        "seconds": seconds,
        "single_process_per_s": round(count / elapsed, 2),
        "single_process_ms_per_pdf": round(elapsed / max(count, 1) * 1000, 1),
        "pool_processes": workers,
        "pool_per_s": round(sum(c / e for c, e in results), 2),
    }
