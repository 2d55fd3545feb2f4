"""The refusal codes: one list in the code, the same list in the guide, and a reply for
every refused message that names its code."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pydantic
import pytest

from intake.entrypoints.bus import submit_refused
from orderflow import consumer, refusals
from orderflow.messages import MessageRefused, Problem, SubmitOrderReply, VerdictGiven
from orderflow.outbox import envelope_headers

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "integration.md"


def guide_codes() -> list[str]:
    text = GUIDE.read_text()
    section = text.split("\n## Refusals and their codes\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `([a-z_]+)` \|", section, flags=re.MULTILINE)


def test_the_guide_lists_exactly_the_codes() -> None:
    listed = guide_codes()
    assert len(listed) == len(set(listed)), "a code listed twice"
    assert listed == list(refusals.CODES)
    # and the section sits just before the limits
    text = GUIDE.read_text()
    assert text.index("## Refusals and their codes") < text.index("## Limits")
    assert "\n## " not in text.split("## Refusals and their codes", 1)[1].split("## Limits")[0]


def test_codes_are_stable_snake_case_and_checked() -> None:
    assert all(re.fullmatch(r"[a-z][a-z0-9_]*", c) for c in refusals.CODES)
    with pytest.raises(ValueError, match="unknown refusal code"):
        refusals.Refused("no_such_code", "why")
    with pytest.raises(ValueError, match="unknown refusal code"):
        consumer.PermanentError("why", code="NoSuchCode")


def test_a_refusal_is_answered_in_the_reply_its_type_has() -> None:
    refused = refusals.Refused(
        refusals.MISSING_USER_ID, "no user_id", [Problem(pointer="", detail="no user_id")]
    )
    # intake's commands queue is given its own reply (decision 0027)
    submit = submit_refused(refused, refusals.RefusedMessage("m1", "order.submit"))
    assert isinstance(submit, SubmitOrderReply)
    assert (submit.accepted, submit.code, submit.reason) == (False, "missing_user_id", "no user_id")
    other = refusals.reply_for(refused, refusals.RefusedMessage("m2", VerdictGiven.message_type))
    assert isinstance(other, MessageRefused)
    assert other.message_type == "message.refused"
    assert json.loads(other.model_dump_json()) == {
        "code": "missing_user_id",
        "reason": "no user_id",
        "problems": [{"pointer": "", "detail": "no user_id"}],
        "refused_message_id": "m2",
        "refused_type": "review.verdict",
    }


def test_reasons_name_no_python_class() -> None:
    class Boom(Exception):
        pass

    try:
        VerdictGiven.model_validate({"decision": "maybe"})
    except pydantic.ValidationError as exc:
        invalid = consumer.refusal_of(exc)
    cases = [
        (consumer.PermanentError("unknown order", code=refusals.UNKNOWN_ORDER), "unknown_order"),
        (invalid, "invalid_message"),
        (json.JSONDecodeError("Expecting value", "x", 0), "not_json"),
        (Boom("disk full"), "processing_failed"),
    ]
    for exc, code in cases:
        refused = exc if isinstance(exc, refusals.Refused) else consumer.refusal_of(exc)
        assert refused.code == code
        assert not re.search(r"\b\w*(Error|Exception|Boom)\b", refused.reason), refused.reason
    assert consumer.refusal_of(Boom("disk full")).reason == (
        "the service failed to handle the message: disk full"
    )


def test_envelope_headers_are_strings() -> None:
    # pamqp sends a small int as AMQP `b` (signed 8-bit): a Java Byte, a .NET sbyte
    headers = envelope_headers(MessageRefused)
    assert all(isinstance(v, str) for v in headers.values()), headers
    assert headers["x-schema-version"] == "1"
