"""The CI-sized fault run: a few hundred orders through two replicas of every service while
processes are SIGKILLed, RabbitMQ and PostgreSQL restart and poison is injected; every
invariant of `bench/fault_run.py` must hold (the full run is that script, 5,000 orders)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.faults

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "fault_run.py"


def load_fault_run():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("fault_run", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.timeout(420)
async def test_ci_sized_fault_run_loses_nothing() -> None:
    fault_run = load_fault_run()
    args = fault_run.parser().parse_args(
        [
            "--orders", "240",
            "--rate", "16",
            "--kills", "4",
            "--broker-restarts", "1",
            "--database-restarts", "1",
            "--drain-timeout", "180",
            "--seed", "11",
        ]
    )  # fmt: skip
    ok, summary = await fault_run.run(args)
    invariants = summary["invariants"]
    assert invariants["orders lost"] == 0
    assert invariants["orders doubled"] == 0
    assert invariants["orders stuck"] == 0
    assert invariants["contracts"] == 240
    assert invariants["poison not dead-lettered with a reason"] == 0
    assert summary["kills"] == 4
    assert summary["broker_restarts"] == 1
    assert summary["database_restarts"] == 1
    assert ok, summary
