"""What a throughput run costs: CPU and memory of each group of processes (the services'
replicas, the broker's Erlang processes, the database's postmaster and backends), the
broker's global message counters, and the database's committed transactions.

All are read from the outside (psutil on /proc, `rabbitmqctl eval`, `pg_stat_database`), so
nothing is added to the services under test.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import psutil

from orderflow_testkit.localservers import LocalPostgres, LocalRabbit

#: the global counters every RabbitMQ >= 3.9 keeps without the management plugin, summed
#: over protocols and queue types (`rabbit_global_counters:overview()`)
BROKER_COUNTERS = (
    "messages_received_total",
    "messages_received_confirm_total",
    "messages_routed_total",
    "messages_confirmed_total",
    "messages_delivered_total",
    "messages_acknowledged_total",
    "messages_redelivered_total",
)
_COUNTERS_EXPR = (
    "R = rabbit_global_counters:overview(), "
    "S = fun(N) -> maps:fold(fun(_, M, A) -> A + maps:get(N, M, 0) end, 0, R) end, "
    "[{N, S(N)} || N <- [" + ", ".join(BROKER_COUNTERS) + "]]."
)


def broker_counters(rabbit: LocalRabbit) -> dict[str, int]:
    out = rabbit.rabbitmqctl("eval", _COUNTERS_EXPR)
    return {name: int(value) for name, value in re.findall(r"\{(\w+),(\d+)\}", out)}


async def database_xacts(url: str, database: str) -> dict[str, int]:
    conn = await asyncpg.connect(url)
    try:
        row = await conn.fetchrow(
            "SELECT xact_commit, xact_rollback FROM pg_stat_database WHERE datname = $1",
            database,
        )
    finally:
        await conn.close()
    assert row is not None
    return {"xact_commit": int(row["xact_commit"]), "xact_rollback": int(row["xact_rollback"])}


# --- which processes make up each part ------------------------------------------------------


def broker_processes(rabbit: LocalRabbit) -> list[psutil.Process]:
    """The node's Erlang processes, found by its name in their environment (as
    LocalRabbit.kill finds them); not epmd, which the machine's own broker shares."""
    marker = f"RABBITMQ_NODENAME={rabbit.node}".encode()
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if (proc / "comm").read_text().strip() == "epmd":
                continue
            if marker in (proc / "environ").read_bytes().split(b"\0"):
                found.append(psutil.Process(int(proc.name)))
        except (OSError, psutil.Error):
            continue
    return found


def postmaster(postgres: LocalPostgres) -> psutil.Process:
    pid = int((postgres.data / "postmaster.pid").read_text().splitlines()[0])
    return psutil.Process(pid)


@dataclass
class Group:
    """A part of the system: its processes are looked up afresh at each reading, since
    database backends come and go. `reaper` is a process whose reaped children's CPU
    counts too (the postmaster's exited backends)."""

    name: str
    processes: Callable[[], list[psutil.Process]]
    reaper: Callable[[], psutil.Process] | None = None
    peak_rss: int = 0
    peak_pss: int = 0

    def cpu_seconds(self) -> float:
        total = 0.0
        for p in self.processes():
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                continue  # gone between listing and reading: its CPU is in the reaper's
        if self.reaper is not None:
            t = self.reaper().cpu_times()
            total += t.children_user + t.children_system
        return total

    def sample_memory(self) -> None:
        rss = pss = 0
        for p in self.processes():
            try:
                info = p.memory_full_info()
            except psutil.Error:
                continue
            rss += info.rss
            pss += getattr(info, "pss", info.rss)
        self.peak_rss = max(self.peak_rss, rss)
        self.peak_pss = max(self.peak_pss, pss)


def tree(root: Callable[[], psutil.Process]) -> Callable[[], list[psutil.Process]]:
    def processes() -> list[psutil.Process]:
        top = root()
        return [top, *top.children(recursive=True)]

    return processes


@dataclass
class Resources:
    """CPU readings at the start and end of the measured window, and a thread sampling the
    memory of every group meanwhile (peaks: the sum over a group's processes)."""

    groups: list[Group]
    interval: float = 1.0
    started: dict[str, float] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self.started = {g.name: g.cpu_seconds() for g in self.groups}
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.is_set():
            for g in self.groups:
                g.sample_memory()
            self._stop.wait(self.interval)

    def stop(self) -> dict[str, dict[str, float]]:
        """Per group: CPU seconds over the window and peak memory in MiB."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        for g in self.groups:
            g.sample_memory()
        return {
            g.name: {
                "cpu_seconds": round(g.cpu_seconds() - self.started[g.name], 3),
                "peak_rss_mib": round(g.peak_rss / 2**20, 1),
                "peak_pss_mib": round(g.peak_pss / 2**20, 1),
            }
            for g in self.groups
        }


def percentiles(values: list[float]) -> dict[str, float | None]:
    """p50/p95/p99/max in milliseconds (nearest rank), from seconds."""
    if not values:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None, "mean_ms": None}
    ordered = sorted(values)

    def rank(q: float) -> float:
        index = max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))
        return round(ordered[index] * 1000, 1)

    return {
        "p50_ms": rank(0.50),
        "p95_ms": rank(0.95),
        "p99_ms": rank(0.99),
        "max_ms": round(ordered[-1] * 1000, 1),
        "mean_ms": round(sum(ordered) / len(ordered) * 1000, 1),
    }
