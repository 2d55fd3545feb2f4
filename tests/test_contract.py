"""The public contract: outside systems' documents accepted as they are, names as designed."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import ValidationError

from orderflow import topology
from orderflow.messages import EVENTS, OrderDocument, SubmitOrder, VerdictGiven

EXAMPLES = Path(__file__).resolve().parents[1] / "docs" / "examples"


@pytest.mark.parametrize("name", ["order-product", "order-service"])
def test_example_orders_are_accepted_as_they_are(name: str) -> None:
    raw = json.loads((EXAMPLES / f"{name}.json").read_text())
    for model in (OrderDocument, SubmitOrder):
        order = model.model_validate(raw)
        # nothing is dropped or renamed on the way through
        assert json.loads(order.model_dump_json(exclude_unset=True)) == raw


def test_product_example_amounts_are_exact_decimals() -> None:
    order = OrderDocument.model_validate_json((EXAMPLES / "order-product.json").read_text())
    assert order.subtotal() == Decimal("18380.00")  # 200 x 85.50 + 400 x 3.20
    assert order.tax() == Decimal("2389.40")
    assert order.total() == Decimal("20769.40")
    assert order.has_technical_requirements


def test_example_verdict_is_accepted() -> None:
    verdict = VerdictGiven.model_validate_json((EXAMPLES / "verdict.json").read_text())
    assert verdict.decision == "request_changes"
    assert [a.field for a in verdict.annotations] == ["/payment/terms", "/lines/0/unit_price"]


def test_unknown_order_field_is_refused_with_its_path() -> None:
    raw = json.loads((EXAMPLES / "order-product.json").read_text())
    raw["customer"]["emial"] = "typo@example.com"
    with pytest.raises(ValidationError) as err:
        OrderDocument.model_validate(raw)
    assert ("customer", "emial") in [e["loc"] for e in err.value.errors()]


def test_money_is_never_a_float() -> None:
    raw = json.loads((EXAMPLES / "order-product.json").read_text())
    dumped = json.loads(OrderDocument.model_validate(raw).model_dump_json())
    assert dumped["lines"][0]["unit_price"] == "85.50"
    assert dumped["tax_rate"] == "0.13"


def test_topology_names_are_the_designed_ones() -> None:
    assert (topology.COMMANDS, topology.EVENTS, topology.REVIEWS, topology.VERDICTS) == (
        "orderflow.commands",
        "orderflow.events",
        "orderflow.reviews",
        "orderflow.verdicts",
    )
    assert topology.DLX == "orderflow.dlx"
    for department in ("supervisor", "production", "service_delivery", "finance", "technical"):
        spec = topology.department_queue(department)
        assert spec.name == f"review.{department}"
        assert spec.dlq == f"review.{department}.dlq"
    for spec in topology.SERVICE_QUEUES:
        args = topology.queue_arguments(spec.name)
        assert args["x-queue-type"] == "quorum"
        assert args["x-delivery-limit"] > 0
        assert args["x-dead-letter-exchange"] == "orderflow.dlx"
        assert args["x-dead-letter-routing-key"] == spec.name


def test_every_event_routes_on_its_type() -> None:
    for message_type, model in EVENTS.items():
        assert model.message_type == message_type
        assert model.schema_name() == f"orderflow.{message_type}"
