"""The throughput benchmark, small: 20 orders over the bus through one replica of every
service on servers of its own; every figure is in the JSON, every order decided and
drafted, every check of the fault run holds (the full run is `bench/throughput.py`)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def load_throughput():  # type: ignore[no-untyped-def]
    sys.path.insert(0, str(BENCH))  # its helpers and the fault run sit beside it
    spec = importlib.util.spec_from_file_location("throughput", BENCH / "throughput.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module


def test_percentiles_by_nearest_rank() -> None:
    percentiles = load_throughput().measure.percentiles
    got = percentiles([i / 1000 for i in range(1, 101)])  # 1 ms .. 100 ms
    assert (got["p50_ms"], got["p95_ms"], got["p99_ms"], got["max_ms"]) == (50, 95, 99, 100)
    assert percentiles([])["p99_ms"] is None


def test_tracker_counts_each_order_once() -> None:
    throughput = load_throughput()
    tracker = throughput.Tracker(expected=1)
    order = throughput.Order("R-1", submitted=100.0)
    tracker.orders["R-1"] = order
    approved = {
        "order_id": "o-1",
        "order": {"external_ref": "R-1"},
        "approved_at": "1970-01-01T00:01:41.000Z",
    }
    tracker.on_event("order.approved", approved, 101.5)
    tracker.on_event("order.approved", approved, 102.0)  # a redelivery
    assert not tracker.everything.is_set()
    tracker.on_event(
        "contract.drafted", {"order_id": "o-1", "drafted_at": "1970-01-01T00:01:42.000Z"}, 103.0
    )
    assert tracker.everything.is_set()
    assert (order.decided, order.decided_recorded, order.drafted) == (101.5, 101.0, 103.0)
    assert tracker.twice == {"order.approved": 1}


@pytest.mark.slow
@pytest.mark.faults
@pytest.mark.timeout(600)
async def test_small_run_has_every_figure_and_passes_the_checks(tmp_path: Path) -> None:
    throughput = load_throughput()
    args = throughput.parse(["--quick", "--orders", "20", "--replicas", "1"])
    summary = await throughput.run(args)
    out = tmp_path / "bench.json"
    out.write_text(json.dumps(summary))
    figures = json.loads(out.read_text())

    assert figures["orders_decided"] == 20
    assert figures["orders_drafted"] == 20
    assert figures["checks_failed"] == []
    assert figures["checks"]["contracts doubled"] == 0
    assert figures["checks"]["notifications doubled"] == 0
    assert figures["ok"] is True
    t = figures["throughput"]
    assert t["orders_per_s_to_decision"] > 0
    assert t["orders_per_s_to_contract"] > 0
    for path in ("submission_to_decision", "submission_to_contract"):
        p = figures["latency"][path]
        assert 0 < p["p50_ms"] <= p["p95_ms"] <= p["p99_ms"] <= p["max_ms"]
    per = figures["per_order"]
    # an order is at least its submit, its review requests and verdicts, and its events
    assert per["messages_published"] >= 5
    assert per["messages_delivered"] >= 5
    assert per["transactions"] >= 3
    for part in ("intake", "review-router", "contracts", "notifier", "rabbitmq", "postgresql"):
        assert figures["processes"][part]["cpu_seconds"] > 0, part
        assert figures["processes"][part]["peak_rss_mib"] > 0, part
    assert per["cpu_ms_system"] > 0
    render = figures["render_loop"]
    assert render["single_process_per_s"] > 0
    assert render["pool_per_s"] > 0
    assert figures["settings"]["replicas"] == 1
    assert figures["settings"]["git_rev"]
