"""The README's architecture in brief is the topology: every queue, and every service's
events in its row of the table."""

from __future__ import annotations

import re
from pathlib import Path

from orderflow import busaccess, topology

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
SECTION = README.split("## Architecture in brief", 1)[1].split("\n## ", 1)[0]


def test_every_queue_is_named() -> None:
    queues = SECTION.split("**Queues**", 1)[1].split("\n\n", 1)[0]
    named = set(re.findall(r"`([a-z_.-]+)`", queues))
    assert {q.name for q in topology.SERVICE_QUEUES} <= named


def test_each_service_row_names_the_events_it_publishes() -> None:
    rows = {
        line.split("|")[1].strip(): line.split("|")[5]
        for line in SECTION.splitlines()
        if line.startswith("| ") and line.count("|") == 6
    }
    for event, service in busaccess.EVENT_PRODUCERS.items():
        assert f"`{event}`" in rows[service], (service, event)


def test_each_notifier_queue_is_in_the_notifier_row() -> None:
    consumes = next(line for line in SECTION.splitlines() if line.startswith("| notifier |"))
    for queue in topology.SERVICE_QUEUES:
        if queue.name.startswith("notifier."):
            assert all(f"`{key}`" in consumes.split("|")[4] for key in queue.routing_keys)
