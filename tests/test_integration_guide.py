"""docs/integration.md states the permissions of every outside party exactly as
`orderflow-bus` provisions them: an integrator codes against the guide, so it must be
true to busaccess."""

from __future__ import annotations

from pathlib import Path

from orderflow import busaccess

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "integration.md"


def _cell(pattern: str) -> str:
    # a `|` inside a Markdown table cell is written `\|`
    return "`" + pattern.replace("|", r"\|") + "`"


def _section(title: str) -> str:
    text = GUIDE.read_text()
    start = text.index(title + "\n")
    level = title.split(" ")[0]
    rest = text[start + len(title) :]
    ends = [i for i in (rest.find(f"\n{level} "), rest.find("\n## ")) if i >= 0]
    return rest[: min(ends)] if ends else rest


def test_the_bus_users_table_is_what_provisioning_grants() -> None:
    table = {
        line.split("|")[2].strip(): line
        for line in _section("## Bus users").splitlines()
        if line.startswith("| ") and "`" in line
    }
    parties = {
        "`dept-finance`": busaccess.department_permissions("finance"),
        "`crm`": busaccess.submitter_permissions("crm"),
        "`bi`": busaccess.listener_permissions("bi", ["order.approved", "contract.drafted"]),
    }
    for user, granted in parties.items():
        assert user in table, f"no row for {user} in the guide's Bus users table"
        cells = [c.strip() for c in table[user].strip().strip("|").split(" | ")]
        assert cells[2:] == [
            _cell(granted.configure),
            _cell(granted.write),
            _cell(granted.read),
            f"{_cell(granted.topic_write)} / {_cell(granted.topic_read)}",
        ], f"the guide's permissions of {user} are not what busaccess grants"


def test_a_department_systems_own_table_is_what_provisioning_grants() -> None:
    section = _section("### Your RabbitMQ user")
    granted = busaccess.department_permissions("finance")
    for kind, pattern in (
        ("configure", granted.configure),
        ("write", granted.write),
        ("read", granted.read),
    ):
        assert f"| {kind} | {_cell(pattern)} |" in section, kind
    assert f"write {_cell(granted.topic_write)}, read {_cell(granted.topic_read)}" in section
