"""A resubmitted revision: what changed, whose approval stands, which rounds it replaces."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from orderflow import jsonpointer
from orderflow.messages import FieldChange, OrderDocument

from .. import policy as policies
from .rounds import Kept, RequestStatus, ReviewPlan, Round, RoundStatus


def _normal(order: OrderDocument) -> dict[str, object]:
    # without its unset fields: the two revisions then hold no null anywhere (attribute
    # values are text, list items are objects), so a field set in one revision only is a
    # key added or removed, never a null compared with a missing key
    return order.model_dump(mode="json", exclude_none=True)


def changes_between(previous: OrderDocument, current: OrderDocument) -> list[FieldChange]:
    """Every field that differs between two revisions, from the documents the router stored:
    what decides who reviews again when a revision was announced without its changes."""
    return [
        FieldChange(pointer=pointer, old=old, new=new)
        for pointer, old, new in jsonpointer.diff(_normal(previous), _normal(current))
    ]


def kept_approvals(
    *,
    previous: Round | None,
    plan: ReviewPlan,
    policy: policies.Policy,
    changed: Sequence[str],
) -> dict[str, Kept]:
    """The departments of `plan` whose approval of the previous revision stands: the policy
    lets them keep it, they approved (or kept an approval of) that revision, and no change
    touches a field they own or a field nobody owns."""
    if previous is None:
        return {}
    owned = policy.owned()
    kept: dict[str, Kept] = {}
    for department in plan.departments:
        before = previous.of(department)
        if (
            before is None
            or before.status != RequestStatus.APPROVED
            or before.feedback is None
            or not policy.keeps_approval(department)
            or not policies.untouched(department, changed, owned)
        ):
            continue
        kept[department] = Kept(review_id=before.review_id, feedback=before.feedback)
    return kept


@dataclass(frozen=True)
class Submission:
    """What a submitted revision does to the order's rounds."""

    opens: bool
    supersede: tuple[Round, ...] = ()
    ignored_because: str | None = None
    previous: Round | None = None


def submission(existing: Sequence[Round], revision: int) -> Submission:
    """A newer revision replaces the open round of an older one. A revision that already has
    a round (a re-sent event) or that is older than one with a round opens nothing."""
    if any(r.revision == revision for r in existing):
        return Submission(opens=False, ignored_because=f"revision {revision} already has a round")
    newer = [r.revision for r in existing if r.revision > revision]
    if newer:
        return Submission(
            opens=False,
            ignored_because=f"revision {revision} is older than revision {max(newer)}",
        )
    return Submission(
        opens=True,
        supersede=tuple(
            r for r in existing if r.status == RoundStatus.OPEN and r.revision < revision
        ),
        previous=max(existing, key=lambda r: r.revision, default=None),
    )
