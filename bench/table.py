"""The README's figures, from the committed benchmark JSON: each run of `throughput.py` as
a column, each "after" next to its "before".

    uv run python bench/table.py baseline-bus.json after-bus.json baseline-http.json ...

Names are looked up in bench/results/ unless a path is given; a column's heading is the
file's name without `.json`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"

Row = tuple[str, Callable[[dict[str, Any]], Any]]


def _latency(name: str) -> Callable[[dict[str, Any]], str]:
    def cell(run: dict[str, Any]) -> str:
        lat = run["latency"][name]
        return " / ".join(f"{lat[k]:.0f}" for k in ("p50_ms", "p99_ms", "max_ms"))

    return cell


def _cpu(part: str) -> Callable[[dict[str, Any]], Any]:
    return lambda run: run["per_order"]["cpu_ms"][part]


def _mode(run: dict[str, Any]) -> str:
    rate = run["settings"]["rate"]
    return str(run["settings"]["mode"]) + (f" {rate}/s" if rate else "")


def _rate(to: str) -> Callable[[dict[str, Any]], str]:
    def cell(run: dict[str, Any]) -> str:
        t = run["throughput"]
        return f"{t[f'orders_per_s_to_{to}']} ({t[f'steady_orders_per_s_to_{to}']})"

    return cell


def _messages(run: dict[str, Any]) -> str:
    per = run["per_order"]
    return f"{per['messages_published']} / {per['messages_delivered']}"


def _render(run: dict[str, Any]) -> str:
    loop = run["render_loop"]
    return f"{loop['single_process_per_s']} / {loop['pool_per_s']}"


PARTS = ("intake", "review-router", "contracts", "notifier", "rabbitmq", "postgresql")
ROWS: list[Row] = [
    ("git revision", lambda r: r["settings"]["git_rev"]),
    ("via, replicas", lambda r: f"{r['settings']['via']}, {r['settings']['replicas']}"),
    ("mode", _mode),
    ("orders", lambda r: r["settings"]["orders"]),
    ("orders/s accepted", lambda r: r["throughput"]["orders_per_s_accepted"]),
    ("orders/s to decision (steady)", _rate("decision")),
    ("orders/s to contract (steady)", _rate("contract")),
    ("ms → decision p50 / p99 / max", _latency("submission_to_decision")),
    ("ms → contract p50 / p99 / max", _latency("submission_to_contract")),
    ("messages published / delivered per order", _messages),
    ("transactions per order", lambda r: r["per_order"]["transactions"]),
    ("CPU ms/order: services + broker + database", lambda r: r["per_order"]["cpu_ms_system"]),
    ("… without contracts", lambda r: r["per_order"]["cpu_ms_system_without_contracts"]),
    *((f"CPU ms/order: {part}", _cpu(part)) for part in PARTS),
    ("bare render loop PDFs/s (1 process / pool)", _render),
    ("checks (0 lost, doubled, stuck)", lambda r: "ok" if r["ok"] else "FAILED"),
]


def load(name: str) -> tuple[str, dict[str, Any]]:
    path = Path(name) if Path(name).exists() else RESULTS / name
    return path.stem, json.loads(path.read_text(encoding="utf-8"))


def table(runs: list[tuple[str, dict[str, Any]]]) -> str:
    lines = ["| figure | " + " | ".join(f"`{n}`" for n, _ in runs) + " |"]
    lines.append("|---" * (len(runs) + 1) + "|")
    for label, cell in ROWS:
        lines.append(f"| {label} | " + " | ".join(str(cell(r)) for _, r in runs) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table([load(n) for n in sys.argv[1:]]))
