"""The permission tables and the trust rules, without a broker (the broker's own checks
are in tests/test_bus_trust.py)."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest

from orderflow import busaccess, provisioning, refusals, topology
from orderflow.messages import EVENTS


def test_every_event_has_exactly_one_producing_service() -> None:
    busaccess.check_tables()
    assert set(busaccess.EVENT_PRODUCERS) == set(EVENTS)


def allowed(pattern: str, name: str) -> bool:
    return re.search(pattern, name) is not None


def test_a_department_may_read_its_queue_and_send_verdicts_only() -> None:
    p = busaccess.department_permissions("finance")
    assert allowed(p.read, "review.finance") and not allowed(p.read, "review.finance2")
    assert not allowed(p.read, "review.production")
    assert allowed(p.write, topology.VERDICTS)
    assert not any(allowed(p.write, n) for n in (topology.EVENTS, "amq.default", "review.finance"))
    assert not allowed(p.configure, "review.finance")
    # its own reply queues, where refusals are answered, and no one else's
    assert allowed(p.configure, "dept-finance.replies") and allowed(p.read, "dept-finance.replies")
    assert not allowed(p.configure, "dept-production.replies")
    assert not allowed(p.configure, "review.finance.spy") and not allowed(p.write, "dept-finance.x")


def test_a_listener_binds_only_the_event_types_it_was_given() -> None:
    p = busaccess.listener_permissions("bi", ["order.approved"])
    assert allowed(p.topic_read, "order.approved")
    assert not allowed(p.topic_read, "#") and not allowed(p.topic_read, "order.approved.x")
    assert allowed(p.configure, "bi.approved") and not allowed(p.configure, "bix.approved")
    with pytest.raises(ValueError, match=r"order\.nope"):
        busaccess.listener_permissions("bi", ["order.nope"])


def trust() -> busaccess.Trust:
    return busaccess.Trust(
        own_user="contracts",
        service_users=busaccess.service_users(),
        outside={},
    )


def refusal(
    user: str | None, headers: dict[str, object] | None = None, kind: str = "order.approved"
) -> str | None:
    refused = refused_as(user, headers, kind)
    return None if refused is None else refused.reason


def refused_as(
    user: str | None, headers: dict[str, object] | None = None, kind: str = "order.approved"
) -> refusals.Refused | None:
    return trust().refusal(
        queue="contracts.order-approved",
        accepted=("order.approved",),
        message_type=kind,
        user_id=user,
        headers=headers or {},
    )


def test_only_the_producer_of_a_type_is_heard() -> None:
    assert refusal("review-router") is None
    assert (
        refusal("intake")
        == "order.approved from user intake refused: only review-router may publish it"
    )
    assert (refusal(None) or "").startswith("order.approved without user_id refused")
    assert (refusal("review-router", kind="contract.drafted") or "").startswith(
        "unknown message type 'contract.drafted' on contracts.order-approved"
    )
    codes = [
        getattr(refused_as(*case), "code", None)
        for case in (("intake",), (None,), ("review-router", None, "contract.drafted"))
    ]
    assert codes == [refusals.WRONG_PRODUCER, refusals.MISSING_USER_ID, refusals.UNEXPECTED_TYPE]


def test_a_replay_by_the_service_is_judged_by_the_recorded_producer() -> None:
    replay = {busaccess.REPLAYS: 1, busaccess.ORIGINAL_USER: "review-router"}
    assert refusal("contracts", replay) is None
    forged = {busaccess.REPLAYS: 1, busaccess.ORIGINAL_USER: b"intake"}
    assert "replaying 'intake'" in (refusal("contracts", forged) or "")
    # the recorded producer counts only on a replay from the service's own user
    assert refusal("notifier", replay) is not None
    assert refusal("contracts", {busaccess.ORIGINAL_USER: "review-router"}) is not None


def test_credentials_are_written_privately_and_merged(tmp_path: Path) -> None:
    path = tmp_path / "bus.env"
    provisioning.write_env_file(path, {"review-router": "a"})
    provisioning.write_env_file(path, {"dept-finance": "b"})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert provisioning.read_env_file(path) == {
        "ORDERFLOW_BUS_PASSWORD_REVIEW_ROUTER": "a",
        "ORDERFLOW_BUS_PASSWORD_DEPT_FINANCE": "b",
    }
    provisioning.write_secrets_dir(tmp_path / "secrets", {"intake": "c"})
    secret = provisioning.secret_file(tmp_path / "secrets", "intake")
    assert secret.read_text() == "c" and stat.S_IMODE(secret.stat().st_mode) == 0o600


def test_provision_names_the_department_users_after_a_pattern() -> None:
    from orderflow import bus_cli

    args = bus_cli._parser().parse_args(
        ["provision", "--department", "legal", "--department-user-pattern", "w1-dept-{department}"]
    )
    accounts, extra = bus_cli._accounts(args)
    departments = {a.name: a for a in accounts if a.kind == "department"}
    assert set(departments) == {f"w1-dept-{d}" for d in (*topology.DEFAULT_DEPARTMENTS, "legal")}
    assert departments["w1-dept-finance"].permissions == busaccess.department_permissions(
        "finance", "w1-dept-finance"
    )
    assert extra == ["legal"]
    bad = bus_cli._parser().parse_args(["provision", "--department-user-pattern", "dept-x"])
    with pytest.raises(ValueError, match="department"):
        bus_cli._accounts(bad)
