"""The review policy at work on the real broker and database: completion modes, annotations,
approvals kept across revisions, deadlines that survive a restart, delegation, and a bad
policy file stopping the router."""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from orderflow import topology
from orderflow.messages import (
    Annotation,
    Decision,
    FieldChange,
    OrderDocument,
    OrderSubmitted,
    Payment,
    ReassignReview,
    ReviewAnnotated,
    ReviewCancelled,
    Reviewer,
    ReviewRequested,
    Totals,
)
from orderflow_testkit.testing import (
    Infra,
    eventually,
    get_messages,
    publish,
    queue_depth,
    running,
    start_service,
)
from review_router import policy
from review_router.main import create_app

from .test_router import (
    STAGE_TWO,
    Events,
    depths,
    give,
    product_order,
    rounds,
    settings,
    settle,
    statuses,
    submit,
    take,
)

SHIPPED = (Path(policy.__file__).parent / policy.DEFAULT_POLICY).read_text()


def policy_file(
    directory: Path,
    *,
    completion: str = "collect",
    due_hours: float = 24,
    escalate_after_hours: float = 24,
    keep: bool = False,
    version: str = "test",
) -> Path:
    """The shipped policy with other defaults (and no department deadlines of its own)."""
    text = re.sub(r"(?m)^due_hours = \d+\n", "", SHIPPED.split("[departments.supervisor]", 1)[1])
    defaults = (
        f'version = "{version}"\n'
        "[defaults]\n"
        f'completion = "{completion}"\n'
        f"due_hours = {due_hours}\n"
        f"escalate_after_hours = {escalate_after_hours}\n"
        f"keep_approval_when_untouched = {'true' if keep else 'false'}\n"
    )
    path = directory / f"policy-{uuid.uuid4().hex[:8]}.toml"
    path.write_text(defaults + "[departments.supervisor]" + text)
    assert policy.load(path).version == version
    return path


@pytest.fixture
async def events(amqp: Any) -> Events:
    collected = Events(amqp)
    await collected.start()
    return collected


async def annotate(amqp: Any, review: ReviewRequested, *notes: Annotation) -> None:
    command = ReviewAnnotated(
        review_id=review.review_id,
        order_id=review.order_id,
        revision=review.revision,
        department=review.department,
        reviewer=Reviewer(id=f"{review.department}.clerk", name="Clerk"),
        annotations=list(notes),
    )
    await publish(
        amqp,
        exchange=topology.VERDICTS,
        routing_key=review.department,
        body=command.model_dump_json().encode(),
        message_type=command.message_type,
        correlation_id=str(review.order_id),
        user_id=amqp.url.user,
    )


async def review_of(client: httpx.AsyncClient, review_id: uuid.UUID) -> dict[str, Any]:
    response = await client.get(f"/api/v1/reviews/{review_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


# --- collect: one change request with every annotation -----------------------------------


async def test_collect_returns_one_change_request_with_every_annotation(
    amqp: Any, events: Events, infra: Infra
) -> None:
    async with running(create_app(settings(infra))) as router:
        oid = (await submit(amqp, product_order(technical=True))).order_id
        [supervisor] = await take(amqp, "supervisor")
        await give(amqp, supervisor)
        second = {d: (await take(amqp, d))[0] for d in ("production", "finance", "technical")}

        # finance annotates while it reviews, then asks for changes with one more remark
        terms = Annotation(field="/payment/terms", message="预付比例至少 50%", severity="blocker")
        price = Annotation(field="/lines/0/unit_price", message="低于成本价", severity="major")
        await annotate(amqp, second["finance"], terms)
        [recorded] = await events.wait("review.annotation_recorded", oid)
        assert recorded["department"] == "finance" and recorded["annotations"][0]["field"] == (
            "/payment/terms"
        )
        await give(amqp, second["finance"], Decision.REQUEST_CHANGES, annotations=[price])
        # technical annotates too, and asks for changes without repeating itself
        drawing = Annotation(field="/technical_requirements", message="请附图纸")
        await annotate(amqp, second["technical"], drawing)
        await events.wait("review.annotation_recorded", oid, count=2)
        await give(amqp, second["technical"], Decision.REQUEST_CHANGES)
        await events.wait("review.verdict_recorded", oid, count=3)
        # collect: production has not answered, so nobody has been told anything yet
        await settle(events, oid, quiet=0.5)
        assert events.of("order.changes_requested", oid) == []

        await give(amqp, second["production"])
        [changes] = await events.wait("order.changes_requested", oid)
        checklist = [Annotation.model_validate(a) for a in changes["annotations"]]
        assert checklist == [terms, price, drawing]
        by_department = {f["department"]: f for f in changes["feedback"]}
        assert [a["field"] for a in by_department["finance"]["annotations"]] == [
            "/payment/terms",
            "/lines/0/unit_price",
        ]
        assert [a["field"] for a in by_department["technical"]["annotations"]] == [
            "/technical_requirements"
        ]
        await settle(events, oid)
        assert len(events.of("order.changes_requested", oid)) == 1

        review = await review_of(router, second["finance"].review_id)
        kinds = [h["kind"] for h in review["history"]]
        assert kinds == ["requested", "annotated", "verdict"]
        assert review["annotations"][0]["outcome"] == "accepted"
        assert review["annotations"][0]["user_id"] == amqp.url.user
        # an annotation after the decision is kept for the record only
        await annotate(amqp, second["production"], Annotation(field="/notes", message="late"))
        late = await eventually(
            lambda: _with_annotations(router, second["production"].review_id), timeout=10
        )
        assert late["annotations"][0]["outcome"] == "round_closed"
        await settle(events, oid, quiet=0.3)
        assert len(events.of("review.annotation_recorded", oid)) == 2


async def _with_annotations(
    client: httpx.AsyncClient, review_id: uuid.UUID
) -> dict[str, Any] | None:
    review = await review_of(client, review_id)
    return review if review["annotations"] else None


# --- fail_fast and all ----------------------------------------------------------------------


async def test_fail_fast_cancels_the_outstanding_reviews(
    amqp: Any, events: Events, infra: Infra, tmp_path: Path
) -> None:
    file = policy_file(tmp_path, completion="fail_fast", version="fail-fast-1")
    async with running(create_app(settings(infra, policy_file=file))) as router:
        oid = (await submit(amqp, product_order(technical=True))).order_id
        [opened] = await events.wait("review.round_opened", oid)
        assert opened["policy_version"] == "fail-fast-1"
        [supervisor] = await take(amqp, "supervisor")
        await give(amqp, supervisor)
        second = {d: (await take(amqp, d))[0] for d in ("production", "finance", "technical")}
        await give(amqp, second["technical"])
        remark = Annotation(field="/payment/terms", message="预付比例至少 50%", severity="blocker")
        await give(amqp, second["finance"], Decision.REQUEST_CHANGES, annotations=[remark])

        [changes] = await events.wait("order.changes_requested", oid)
        assert [f["department"] for f in changes["feedback"]] == [
            "supervisor",
            "finance",
            "technical",
        ]
        assert changes["annotations"] == [remark.model_dump(mode="json")]
        # production was still reviewing: it is told to stop
        [message] = await get_messages(amqp, "review.production", 1)
        assert message.type == "review.cancelled"
        cancelled = ReviewCancelled.model_validate_json(message.body)
        assert cancelled.review_id == second["production"].review_id
        assert "finance asked for changes" in cancelled.reason
        [round_] = await rounds(router, oid)
        assert round_["policy_version"] == "fail-fast-1"
        assert round_["plan"][1]["completion"] == "fail_fast"
        assert statuses(round_) == {
            "supervisor": "approved",
            "production": "cancelled",
            "finance": "changes_requested",
            "technical": "approved",
        }
        # its verdict, if it comes anyway, changes nothing
        await give(amqp, second["production"])
        found = await eventually(lambda: _verdicts(router, oid, 4))
        assert found[-1]["outcome"] == "round_closed"
        await settle(events, oid)
        assert len(events.of("order.changes_requested", oid)) == 1
        assert events.of("order.approved", oid) == []


async def _verdicts(
    client: httpx.AsyncClient, order_id: uuid.UUID, count: int
) -> list[dict[str, Any]] | None:
    [round_] = await rounds(client, order_id)
    found: list[dict[str, Any]] = round_["verdicts"]
    return found if len(found) >= count else None


async def test_all_decides_at_once_and_lets_the_stage_finish(
    amqp: Any, events: Events, infra: Infra, tmp_path: Path
) -> None:
    file = policy_file(tmp_path, completion="all", keep=True)
    async with running(create_app(settings(infra, policy_file=file))) as router:
        order = product_order(technical=False)
        oid = (await submit(amqp, order)).order_id
        [supervisor] = await take(amqp, "supervisor")
        await give(amqp, supervisor)
        production, finance = (await take(amqp, "production"))[0], (await take(amqp, "finance"))[0]
        await give(amqp, finance, Decision.REQUEST_CHANGES)
        # decided at once, production not cancelled
        await events.wait("order.changes_requested", oid)
        await settle(events, oid, quiet=0.5)
        assert await queue_depth(amqp, "review.production") == 0
        assert (await router.get("/api/v1/departments/production/pending")).json()["total"] == 1
        # production finishes its review: recorded after the decision
        await give(amqp, production)
        found = await eventually(lambda: _verdicts(router, oid, 3))
        assert found[-1]["outcome"] == "after_decision"
        [round_] = await rounds(router, oid)
        assert statuses(round_)["production"] == "approved"

        # revision 2 changes only finance's terms: production's late approval stands
        revised = order.model_copy(
            update={"payment": order.payment.model_copy(update={"terms": "50% 预付"})}
        )
        await submit(amqp, revised, order_id=oid, revision=2)
        [finance2] = await take(amqp, "finance")
        assert finance2.revision == 2 and finance2.previous_revision is None
        assert [c.pointer for c in finance2.changes] == ["/payment/terms"]
        await give(amqp, finance2)
        [approved] = await events.wait("order.approved", oid)
        assert [a["department"] for a in approved["approvals"]] == [
            "supervisor",
            "production",
            "finance",
        ]
        assert await depths(amqp, ("supervisor", "production")) == {
            "supervisor": 0,
            "production": 0,
        }


# --- approvals kept across revisions ---------------------------------------------------------


async def resubmit(
    amqp: Any, previous: OrderSubmitted, *, changes: list[FieldChange], **fields: Any
) -> OrderSubmitted:
    order = OrderDocument.model_validate({**dict(previous.order), **fields})
    event = OrderSubmitted(
        order_id=previous.order_id,
        revision=previous.revision + 1,
        order=order,
        totals=Totals.of(order),
        channel="api",
        submitted_at=datetime.now(UTC),
        previous_revision=previous.revision,
        changes=changes,
    )
    await publish(
        amqp,
        exchange=topology.EVENTS,
        routing_key=event.message_type,
        body=event.model_dump_json().encode(),
        message_type=event.message_type,
        correlation_id=str(event.order_id),
    )
    return event


async def test_approvals_are_kept_only_when_no_owned_field_changed(
    amqp: Any, events: Events, infra: Infra, tmp_path: Path
) -> None:
    file = policy_file(tmp_path, keep=True)
    async with running(create_app(settings(infra, policy_file=file))) as router:
        first = await submit(amqp, product_order(technical=True))
        oid = first.order_id
        [supervisor] = await take(amqp, "supervisor")
        await give(amqp, supervisor)
        second = {d: (await take(amqp, d))[0] for d in ("production", "finance", "technical")}
        await give(amqp, second["production"])
        await give(amqp, second["technical"])
        await give(amqp, second["finance"], Decision.REQUEST_CHANGES)
        await events.wait("order.changes_requested", oid)

        # revision 2 touches only finance's payment terms: only finance reviews again, and
        # at once (the supervisor's stage passes on its kept approval)
        terms = first.order.payment.model_copy(update={"terms": "50% 预付"})
        revision2 = await resubmit(
            amqp,
            first,
            payment=terms,
            changes=[FieldChange(pointer="/payment/terms", old="30% 预付", new="50% 预付")],
        )
        [finance2] = await take(amqp, "finance")
        assert (finance2.revision, finance2.stage, finance2.previous_revision) == (2, 2, 1)
        assert [c.pointer for c in finance2.changes] == ["/payment/terms"]
        await settle(events, oid, quiet=0.5)
        assert await depths(amqp, ("supervisor", *STAGE_TWO)) == dict.fromkeys(
            ("supervisor", *STAGE_TWO), 0
        )
        _, round2 = await rounds(router, oid)
        assert statuses(round2) == {
            "supervisor": "approved",
            "production": "approved",
            "finance": "pending",
            "technical": "approved",
        }
        kept = {r["department"]: r["carried_from"] for r in round2["requests"]}
        assert kept["supervisor"] == str(supervisor.review_id)
        assert kept["finance"] is None
        kept_review = await review_of(router, uuid.UUID(round2["requests"][0]["review_id"]))
        assert [h["kind"] for h in kept_review["history"]] == ["kept"]
        await give(amqp, finance2, Decision.REQUEST_CHANGES)
        await events.wait("order.changes_requested", oid, count=2)

        # revision 3 changes a unit price, and the submitter announces nothing: the router's
        # own diff forces everybody who owns the lines to review again
        lines = [
            revision2.order.lines[0].model_copy(update={"unit_price": Decimal("95.00")}),
            *revision2.order.lines[1:],
        ]
        await resubmit(amqp, revision2, lines=lines, changes=[])
        second3 = {d: (await take(amqp, d))[0] for d in ("production", "finance", "technical")}
        for review in second3.values():
            assert review.revision == 3
            assert [(c.pointer, c.old, c.new) for c in review.changes] == [
                ("/lines/0/unit_price", "85.50", "95.00")
            ]
        assert await queue_depth(amqp, "review.supervisor") == 0
        for review in second3.values():
            await give(amqp, review)
        [approved] = await events.wait("order.approved", oid)
        assert approved["revision"] == 3
        assert [a["department"] for a in approved["approvals"]] == [
            "supervisor",
            "production",
            "finance",
            "technical",
        ]
        # the supervisor's approval of revision 1 stood through revisions 2 and 3
        assert approved["approvals"][0]["reviewer"]["id"] == "supervisor.lead"


async def test_every_department_reviews_again_by_default(
    amqp: Any, events: Events, infra: Infra
) -> None:
    async with running(create_app(settings(infra))):
        first = await submit(amqp, product_order(technical=False))
        [supervisor] = await take(amqp, "supervisor")
        await give(amqp, supervisor)
        await give(amqp, (await take(amqp, "production"))[0])
        await give(amqp, (await take(amqp, "finance"))[0], Decision.REQUEST_CHANGES)
        await events.wait("order.changes_requested", first.order_id)
        await resubmit(
            amqp,
            first,
            payment=Payment(terms="50% 预付", settlement_days=30),
            changes=[FieldChange(pointer="/payment/terms")],
        )
        [again] = await take(amqp, "supervisor")
        assert again.revision == 2 and again.previous_revision == 1


# --- deadlines ---------------------------------------------------------------------------------


async def test_overdue_reminder_and_escalation_survive_a_restart(
    amqp: Any, events: Events, infra: Infra, tmp_path: Path
) -> None:
    due_seconds, escalate_seconds = 3.0, 1.5
    file = policy_file(
        tmp_path, due_hours=due_seconds / 3600, escalate_after_hours=escalate_seconds / 3600
    )
    config = settings(infra, policy_file=file, timer_poll_interval=0.2)
    async with running(create_app(config)):
        late = await submit(amqp, product_order())
        in_time = await submit(amqp, product_order())
        requests = {r.order_id: r for r in await take(amqp, "supervisor", 2)}
        reminded = requests[late.order_id]
        assert reminded.due_at is not None
        assert 2.5 < (reminded.due_at - reminded.requested_at).total_seconds() <= 3.01
        await give(amqp, requests[in_time.order_id])
        await events.wait("review.verdict_recorded", in_time.order_id)
    # the router is down when the review falls due
    await asyncio.sleep(max(0.0, (reminded.due_at - datetime.now(UTC)).total_seconds()) + 0.5)
    assert events.of("review.overdue") == []

    async with running(create_app(config)) as router:
        [overdue] = await events.wait("review.overdue", late.order_id, timeout=10)
        assert overdue["review_id"] == str(reminded.review_id)
        assert overdue["department"] == "supervisor"
        assert datetime.fromisoformat(overdue["due_at"]) == reminded.due_at
        [escalated] = await events.wait("review.escalated", late.order_id, timeout=10)
        assert escalated["escalate_to"] == "sales.director"
        review = await review_of(router, reminded.review_id)
        assert [h["kind"] for h in review["history"]] == ["requested", "overdue", "escalated"]
        late_page = (
            await router.get("/api/v1/departments/supervisor/pending", params={"overdue": "true"})
        ).json()
        assert [i["review_id"] for i in late_page["items"]] == [str(reminded.review_id)]
        # the review answered in time is never reminded of; the second stage it opened is
        await events.wait("review.escalated", in_time.order_id, count=3, timeout=10)
        await settle(events, in_time.order_id, quiet=0.5)
        for kind in ("review.overdue", "review.escalated"):
            assert sorted(e["department"] for e in events.of(kind, in_time.order_id)) == [
                "finance",
                "production",
                "technical",
            ]
            assert len(events.of(kind, late.order_id)) == 1
        answered = await review_of(router, requests[in_time.order_id].review_id)
        assert [t["outcome"] for t in answered["timers"]] == ["skipped: review approved"]


# --- delegation -------------------------------------------------------------------------------


async def test_a_review_handed_to_another_reviewer_records_who_decided_for_whom(
    amqp: Any, events: Events, infra: Infra
) -> None:
    async with running(create_app(settings(infra))) as router:
        oid = (await submit(amqp, product_order())).order_id
        [supervisor] = await take(amqp, "supervisor")
        head = Reviewer(id="li.ming", name="李明")
        deputy = Reviewer(id="wang.fang", name="王芳")
        command = ReassignReview(
            review_id=supervisor.review_id,
            order_id=oid,
            revision=1,
            department="supervisor",
            assigned_by=head,
            assignee=deputy,
            reason="出差",
        )
        await publish(
            amqp,
            exchange=topology.VERDICTS,
            routing_key="supervisor",
            body=command.model_dump_json().encode(),
            message_type=command.message_type,
            correlation_id=str(oid),
            user_id=amqp.url.user,
        )
        [reassigned] = await events.wait("review.reassigned", oid)
        assert reassigned["assignee"]["id"] == "wang.fang"
        mine = (
            await router.get(
                "/api/v1/departments/supervisor/pending", params={"assignee": "wang.fang"}
            )
        ).json()
        assert [i["review_id"] for i in mine["items"]] == [str(supervisor.review_id)]
        assert mine["items"][0]["assignee"]["name"] == "王芳"

        await give(amqp, supervisor, reviewer=deputy, on_behalf_of=head)
        [recorded] = await events.wait("review.verdict_recorded", oid)
        assert recorded["reviewer"]["id"] == "wang.fang"
        assert recorded["on_behalf_of"]["id"] == "li.ming"
        review = await review_of(router, supervisor.review_id)
        assert [h["kind"] for h in review["history"]] == ["requested", "reassigned", "verdict"]
        reassignment, verdict = review["history"][1], review["history"][2]
        assert reassignment["actor"]["id"] == "li.ming"
        assert reassignment["detail"]["assignee"]["id"] == "wang.fang"
        assert verdict["actor"]["id"] == "wang.fang" and verdict["on_behalf_of"]["id"] == "li.ming"
        # a review no longer pending cannot be handed over
        await publish(
            amqp,
            exchange=topology.VERDICTS,
            routing_key="supervisor",
            body=command.model_dump_json().encode(),
            message_type=command.message_type,
            user_id=amqp.url.user,
        )

        async def refused() -> bool:
            found = await review_of(router, supervisor.review_id)
            return len(found["assignments"]) == 2

        await eventually(refused)
        review = await review_of(router, supervisor.review_id)
        assert [a["outcome"] for a in review["assignments"]] == ["accepted", "duplicate"]
        assert len(events.of("review.reassigned", oid)) == 1


# --- the policy's own departments and stages --------------------------------------------------


async def test_large_orders_go_to_the_general_manager_after_the_departments(
    amqp: Any, events: Events, infra: Infra
) -> None:
    async with running(create_app(settings(infra))) as router:
        policy_view = (await router.get("/api/v1/policy")).json()
        assert policy_view["version"] == policy.load().version
        large = product_order(technical=False)
        large = large.model_copy(
            update={
                "lines": [large.lines[0].model_copy(update={"quantity": Decimal("20000")})],
            }
        )
        assert Totals.of(large).total > 1_000_000
        oid = (await submit(amqp, large)).order_id
        [opened] = await events.wait("review.round_opened", oid)
        assert opened["departments"] == ["supervisor", "production", "finance", "general_manager"]
        # the general manager's queue was declared by the router, with its dead-letter queue
        assert await queue_depth(amqp, "review.general_manager") == 0
        assert await queue_depth(amqp, "review.general_manager.dlq") == 0
        await give(amqp, (await take(amqp, "supervisor"))[0])
        await give(amqp, (await take(amqp, "production"))[0])
        await give(amqp, (await take(amqp, "finance"))[0])
        [manager] = await take(amqp, "general_manager")
        assert manager.stage == 3
        await give(amqp, manager)
        [approved] = await events.wait("order.approved", oid)
        assert approved["approvals"][-1]["department"] == "general_manager"


# --- a bad policy file stops the router --------------------------------------------------------


async def test_a_bad_policy_file_stops_the_router_at_start(infra: Infra, tmp_path: Path) -> None:
    text = SHIPPED.replace(
        "when = { technical_requirements = true }", "when = { technical_requirement = true }"
    )
    line = next(i for i, row in enumerate(text.splitlines(), 1) if "technical_requirement =" in row)
    file = tmp_path / "policy.toml"
    file.write_text(text)
    service = start_service(infra, "review-router", tmp_path, REVIEW_ROUTER_POLICY_FILE=str(file))
    try:
        code = await asyncio.to_thread(service.process.wait, 60)
    finally:
        service.terminate()
    output = service.log_tail()
    assert code == 2, output
    assert f"review-router: invalid review policy {file}:" in output
    assert (
        f"line {line}, stages[1].reviews[3].when.technical_requirement: "
        "Extra inputs are not permitted"
    ) in output
    # it stopped before it connected to anything
    assert "service started" not in output and "migration applied" not in output
