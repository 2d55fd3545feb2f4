"""The bus contract as AsyncAPI 3.0.0 documents, one per kind of outside party, built from
the code: the exchanges, queues and routing keys of `topology`, the message models of
`messages`, the envelope headers of `outbox` and the AMQP properties `publisher` sets.

Each document describes the bus from the point of view of one party, as AsyncAPI means it
(`send` is what that party publishes, `receive` what it consumes):

- `department-system`: receives review requests on `review.<department>`, sends verdicts,
  annotations and reassignments to `orderflow.verdicts` with its department as routing key;
- `order-submitter`: sends `order.submit` to `orderflow.commands`, receives the reply on
  the queue it names in `reply_to`;
- `event-listener`: receives the events of `orderflow.events` it was given.

What AsyncAPI has no field for is in extensions: `x-amqp-properties` on a message is a
JSON Schema of its AMQP basic properties (`timestamp` as seconds since the epoch, as AMQP
carries it), `x-amqp-bindings` on a queue channel names the exchange and routing key the
queue is bound with.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Mapping, Sequence
from typing import Any, Literal, cast

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from . import busaccess, topology
from .messages import (
    EVENTS,
    MessageRefused,
    ReassignReview,
    ReviewAnnotated,
    ReviewCancelled,
    ReviewRequested,
    SubmitOrder,
    SubmitOrderReply,
    VerdictGiven,
)
from .messages.base import Message
from .outbox import envelope_headers

ASYNCAPI_VERSION = "3.0.0"
AMQP_BINDING_VERSION = "0.3.0"
CONTENT_TYPE = "application/json"
PERSISTENT = 2

#: What review-router sends to a department queue, and what a department sends back.
REVIEW_MESSAGES: tuple[type[Message], ...] = (ReviewRequested, ReviewCancelled)
DEPARTMENT_MESSAGES: tuple[type[Message], ...] = (VerdictGiven, ReviewAnnotated, ReassignReview)
#: The replies an `order.submit` with a `reply_to` may get (one line per reply type).
SUBMIT_REPLIES: tuple[type[Message], ...] = (SubmitOrderReply,)
#: The reply a department message with a `reply_to` gets when it is refused.
DEPARTMENT_REPLIES: tuple[type[Message], ...] = (MessageRefused,)

#: The W3C trace context, `version-trace_id-parent_id-flags`.
TRACEPARENT = r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"

Direction = Literal["from-orderflow", "to-orderflow"]
#: A message model: a `Message`, or `SubmitOrder` (an order document with a message type).
Model = type[Message] | type[SubmitOrder]

PARTIES = ("department-system", "order-submitter", "event-listener")


# --- schemas --------------------------------------------------------------------------------


def _ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": f"#/components/{kind}/{name}"}


def payload_schemas(
    models: Sequence[tuple[type[BaseModel], JsonSchemaMode]],
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """(model name -> the `$ref` of its payload, components.schemas): each model's JSON
    Schema, in the mode of its direction (what Orderflow writes: serialization; what it
    reads: validation), pydantic's `$defs` turned into `components.schemas`."""
    refs, top = models_json_schema(models, ref_template="#/components/schemas/{model}")
    payloads = {model.__name__: dict(ref) for (model, _), ref in refs.items()}
    return payloads, dict(top.get("$defs", {}))


def _header_value(value: object) -> dict[str, Any]:
    # as the envelope carries it: the type follows the code, so the document never lies
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise TypeError(f"envelope header of unexpected type: {value!r}")
    kind = "string" if isinstance(value, str) else "integer"
    return {"type": kind, "const": value}


def headers_schema(message: Model, direction: Direction) -> dict[str, Any]:
    """The application headers (the AMQP `headers` table) as a JSON Schema. Orderflow sets
    all three on every message it sends; on a message sent to it they are optional, and
    when present they must be right."""
    # SubmitOrder is an OrderDocument, with the same class attributes as a Message
    envelope = envelope_headers(cast(type[Message], message))
    schema: dict[str, Any] = {"type": "object"}
    if direction == "from-orderflow":
        schema["required"] = ["x-schema", "x-schema-version", "traceparent"]
    return {
        **schema,
        "properties": {
            "x-schema": {
                **_header_value(envelope["x-schema"]),
                "description": "The message's schema name, `orderflow.<type>`. An AMQP long "
                "string (`S`): some clients hand it over as bytes (.NET `byte[]`)",
            },
            "x-schema-version": {
                **_header_value(envelope["x-schema-version"]),
                "description": "The schema version; a breaking change raises it",
            },
            "traceparent": {
                "type": "string",
                "pattern": TRACEPARENT,
                "description": "W3C trace context (https://www.w3.org/TR/trace-context/), an "
                "AMQP long string; Orderflow continues the trace of a message it consumes",
            },
        },
        "additionalProperties": True,
    }


#: The AMQP properties every message has alike, before and after the ones that depend on it.
_PROPERTIES_FIRST: dict[str, Any] = {
    "content_type": {"type": "string", "const": CONTENT_TYPE, "description": "UTF-8 JSON"},
    "delivery_mode": {
        "type": "integer",
        "const": PERSISTENT,
        "description": "2, persistent: kept on disk by the broker",
    },
    "message_id": {
        "type": "string",
        "minLength": 1,
        "maxLength": 255,
        "description": "A UUID; the de-duplication key: a message sent again with the "
        "same id is applied once",
    },
}
_PROPERTIES_LAST: dict[str, Any] = {
    "timestamp": {
        "type": "integer",
        "minimum": 0,
        "description": "When the message was written, in SECONDS since the Unix epoch "
        "(AMQP timestamp, 64-bit)",
    },
    "app_id": {"type": "string", "description": "The sending service"},
    "reply_to": {
        "type": "string",
        "description": "Where to answer: a queue of the sender's, `<user>.<name>`",
    },
}


def properties_schema(
    message: Model, direction: Direction, *, user: str, reply: bool = False
) -> dict[str, Any]:
    """The AMQP basic properties of one message type, as a JSON Schema (`x-amqp-properties`):
    names as AMQP 0-9-1 spells them; short strings, `delivery_mode` an octet, `timestamp` a
    64-bit integer of seconds since the epoch."""
    properties: dict[str, Any] = {
        **copy.deepcopy(_PROPERTIES_FIRST),
        "type": {
            "type": "string",
            "const": message.message_type,
            "description": "The message type; consumers tell messages apart by it",
        },
        "user_id": {
            "type": "string",
            "minLength": 1,
            "description": f"The sender's RabbitMQ user (`{user}` unless configured "
            "otherwise), which RabbitMQ checks against the connection's user; a message "
            "without it is refused",
            "examples": [user],
        },
        "correlation_id": {
            "type": "string",
            "description": "A reply: the command's `correlation_id`, or its `message_id` "
            "when it had none"
            if reply
            else "The order id, on every message about an order",
        },
        **copy.deepcopy(_PROPERTIES_LAST),
    }
    required = ["content_type", "delivery_mode", "message_id", "type", "user_id"]
    if direction == "from-orderflow":
        required += ["correlation_id", "app_id"]
        if not reply:
            # replies refused before the handler are sent at once, not from the outbox
            required.append("timestamp")
        del properties["reply_to"]
    return {
        "type": "object",
        "required": required,
        "properties": properties,
        "additionalProperties": True,
    }


# --- the building blocks --------------------------------------------------------------------


def _doc(cls: type[Any]) -> tuple[str, str]:
    text = inspect.cleandoc(cls.__doc__ or "")
    summary = text.split("\n\n")[0].replace("\n", " ")
    return summary, text


class _Builder:
    """One document: its channels, operations and components, added to as it is built."""

    def __init__(self, *, vhost: str, service_users: Mapping[str, str]) -> None:
        self.vhost = vhost
        self.service_users = service_users
        self.channels: dict[str, Any] = {}
        self.operations: dict[str, Any] = {}
        self.messages: dict[str, Any] = {}
        self.models: dict[str, tuple[type[BaseModel], JsonSchemaMode]] = {}

    def exchange_binding(self, exchange: str) -> dict[str, Any]:
        return {
            "amqp": {
                "is": "routingKey",
                "exchange": {
                    "name": exchange,
                    "type": topology.EXCHANGE_TYPES[exchange].value,
                    "durable": True,
                    "autoDelete": False,
                    "vhost": self.vhost,
                },
                "bindingVersion": AMQP_BINDING_VERSION,
            }
        }

    def queue_binding(self, spec: topology.QueueSpec) -> dict[str, Any]:
        return {
            "amqp": {
                "is": "queue",
                "queue": {
                    "name": spec.name,
                    "durable": True,
                    "exclusive": False,
                    "autoDelete": False,
                    "vhost": self.vhost,
                },
                "bindingVersion": AMQP_BINDING_VERSION,
            }
        }

    def producer_user(self, message: type[Message]) -> str:
        service = busaccess.EVENT_PRODUCERS.get(message.message_type)
        if message in REVIEW_MESSAGES:
            service = "review-router"
        if message in SUBMIT_REPLIES:
            service = "intake"
        if message in DEPARTMENT_REPLIES:
            service = "review-router"
        assert service is not None, message
        return self.service_users.get(service, service)

    def message(
        self, message: Model, direction: Direction, *, user: str, reply: bool = False
    ) -> str:
        name = message.__name__
        if name in self.messages:
            return name
        self.models[name] = (
            message,
            "serialization" if direction == "from-orderflow" else "validation",
        )
        summary, text = _doc(message)
        sender = "Orderflow" if direction == "from-orderflow" else "you"
        self.messages[name] = {
            "name": message.message_type,
            "title": name,
            # a model without a docstring has no summary rather than an empty one
            **({"summary": summary} if summary else {}),
            "description": (f"{text}\n\n" if text else "")
            + f"AMQP `type` `{message.message_type}`, sent by "
            f"{sender} as RabbitMQ user `{user}` (its `user_id`), persistent "
            f"(`delivery_mode` 2), `content_type` `{CONTENT_TYPE}`, with a `message_id`; "
            "see `x-amqp-properties` for every property.",
            "contentType": CONTENT_TYPE,
            "headers": headers_schema(message, direction),
            "payload": None,  # set with every model's schema, in `document`
            "bindings": {"amqp": {"messageType": message.message_type, "bindingVersion": "0.3.0"}},
            "x-amqp-properties": properties_schema(message, direction, user=user, reply=reply),
        }
        return name

    def channel(
        self,
        key: str,
        *,
        address: str | None,
        description: str,
        bindings: dict[str, Any] | None,
        messages: Sequence[str],
        extra: dict[str, Any] | None = None,
    ) -> None:
        channel: dict[str, Any] = {
            "address": address,
            "description": description,
            "messages": {m: _ref("messages", m) for m in messages},
            **(extra or {}),
        }
        if bindings is not None:
            channel["bindings"] = bindings
        self.channels[key] = channel

    def operation(
        self,
        key: str,
        *,
        action: Literal["send", "receive"],
        channel: str,
        summary: str,
        user: str,
        mandatory: bool | None = None,
        timestamp: bool = False,
        reply: dict[str, Any] | None = None,
    ) -> None:
        binding: dict[str, Any] = {"deliveryMode": PERSISTENT, "userId": user}
        if mandatory is not None:
            binding["mandatory"] = mandatory
        if timestamp:
            binding["timestamp"] = True
        if action == "receive":
            binding["ack"] = True
        binding["bindingVersion"] = AMQP_BINDING_VERSION
        operation: dict[str, Any] = {
            "action": action,
            "channel": {"$ref": f"#/channels/{channel}"},
            "summary": summary,
            "messages": [
                {"$ref": f"#/channels/{channel}/messages/{m}"}
                for m in self.channels[channel]["messages"]
            ],
            "bindings": {"amqp": binding},
        }
        if reply is not None:
            operation["reply"] = reply
        self.operations[key] = operation

    def document(self, *, title: str, version: str, description: str, host: str) -> dict[str, Any]:
        payloads, schemas = payload_schemas(list(self.models.values()))
        for name, message in self.messages.items():
            message["payload"] = payloads[name]
        return {
            "asyncapi": ASYNCAPI_VERSION,
            "info": {"title": title, "version": version, "description": description},
            "defaultContentType": CONTENT_TYPE,
            "servers": {
                "rabbitmq": {
                    "host": host,
                    "protocol": "amqp",
                    "protocolVersion": "0.9.1",
                    "description": f"RabbitMQ, virtual host `{self.vhost}`; every party "
                    "connects as its own RabbitMQ user, which the operators make for it",
                    "security": [_ref("securitySchemes", "busUser")],
                }
            },
            "channels": self.channels,
            "operations": self.operations,
            "components": {
                "messages": self.messages,
                "schemas": schemas,
                "securitySchemes": {
                    "busUser": {
                        "type": "userPassword",
                        "description": "The party's own RabbitMQ user and password; the user "
                        "is also the `user_id` of every message it sends",
                    }
                },
            },
        }


# --- the three parties ----------------------------------------------------------------------


def department_document(
    b: _Builder, departments: Sequence[str], *, user_pattern: str
) -> dict[str, str]:
    router = b.service_users.get("review-router", "review-router")
    for department in departments:
        user = busaccess.department_user(department, pattern=user_pattern)
        queue = topology.department_queue(department)
        received = [b.message(m, "from-orderflow", user=router) for m in REVIEW_MESSAGES]
        generic = user_pattern.format(department="<department>")
        sent = [b.message(m, "to-orderflow", user=generic) for m in DEPARTMENT_MESSAGES]
        b.channel(
            queue.name,
            address=queue.name,
            description=f"The review requests of {department}: a durable quorum queue, "
            f"bound to `{queue.exchange}` with routing key `{department}`; readable only "
            f"by `{user}`. A request returned more than {topology.DELIVERY_LIMIT} times "
            f"goes to `{queue.dlq}`.",
            bindings=b.queue_binding(queue),
            messages=received,
            extra={"x-amqp-bindings": [{"exchange": queue.exchange, "routingKey": department}]},
        )
        verdicts = f"verdicts.{department}"
        b.channel(
            verdicts,
            address=department,
            description=f"What {department} answers: publish to `{topology.VERDICTS}` "
            f"with routing key `{department}` (the department the message names), as "
            f"`{user}` with that `user_id`, with publisher confirms and `mandatory`.",
            bindings=b.exchange_binding(topology.VERDICTS),
            messages=sent,
        )
        b.operation(
            f"receiveReviews.{department}",
            action="receive",
            channel=queue.name,
            summary=f"Take {department}'s review requests and cancellations; acknowledge "
            "once the answer is confirmed or stored",
            user=router,
            timestamp=True,
        )
        b.operation(
            f"sendVerdicts.{department}",
            action="send",
            channel=verdicts,
            summary=f"Send {department}'s verdicts, annotations and reassignments",
            user=user,
            mandatory=True,
            reply=_department_reply(b, router),
        )
    return {
        "title": "Orderflow for department systems",
        "description": "A department system reviews orders: it takes the review requests of "
        "its department from its queue and answers with verdicts (remarks on fields before, "
        "a reviewer handed over meanwhile, if it likes). Departments: "
        + ", ".join(f"`{d}`" for d in departments)
        + "; a review policy may add more, each with the same two channels.",
    }


def _department_reply(b: _Builder, router: str) -> dict[str, Any]:
    """The one reply channel of every department: where a refusal is answered."""
    replies = [b.message(m, "from-orderflow", user=router, reply=True) for m in DEPARTMENT_REPLIES]
    b.channel(
        "replies.department",
        address=None,
        description="The answer to a refused verdict, annotation or reassignment that had a "
        "`reply_to`: sent through the default exchange to the queue that `reply_to` names "
        "(declare it yourself, named `<user>.<name>`, e.g. `dept-finance.replies`), with the "
        "refused message's `correlation_id` (or its `message_id`). An accepted message gets "
        "no reply.",
        bindings=None,
        messages=replies,
    )
    return {
        "channel": {"$ref": "#/channels/replies.department"},
        "messages": [{"$ref": f"#/channels/replies.department/messages/{m}"} for m in replies],
    }


def submitter_document(b: _Builder, *, user: str) -> dict[str, str]:
    intake = b.service_users.get("intake", "intake")
    command = b.message(SubmitOrder, "to-orderflow", user=user)
    replies = [b.message(m, "from-orderflow", user=intake, reply=True) for m in SUBMIT_REPLIES]
    b.channel(
        "commands.order.submit",
        address=SubmitOrder.message_type,
        description=f"Commands to intake: publish to `{topology.COMMANDS}` with routing "
        f"key `{SubmitOrder.message_type}`, as your own user with that `user_id`.",
        bindings=b.exchange_binding(topology.COMMANDS),
        messages=[command],
    )
    b.channel(
        "replies.order.submit",
        address=None,
        description="The answer to an `order.submit` with a `reply_to`: sent through the "
        "default exchange to the queue that `reply_to` names (declare it yourself, named "
        "`<user>.<name>`), with the command's `correlation_id` (or its `message_id`).",
        bindings=None,
        messages=replies,
    )
    b.operation(
        "sendOrderSubmit",
        action="send",
        channel="commands.order.submit",
        summary="Create and submit an order, or submit a new revision of one sent back",
        user=user,
        mandatory=True,
        reply={
            "channel": {"$ref": "#/channels/replies.order.submit"},
            "messages": [
                {"$ref": f"#/channels/replies.order.submit/messages/{m}"} for m in replies
            ],
        },
    )
    return {
        "title": "Orderflow for order-submitting systems",
        "description": "A company system (a CRM, an e-shop, an ERP) submits orders over the "
        "bus and hears on its own reply queue whether each was accepted.",
    }


def listener_document(b: _Builder) -> dict[str, str]:
    for message_type, message in sorted(EVENTS.items()):
        user = b.producer_user(message)
        name = b.message(message, "from-orderflow", user=user)
        key = f"events.{message_type}"
        b.channel(
            key,
            address=message_type,
            description=f"`{message_type}` events on `{topology.EVENTS}`: bind a queue of "
            f"your own (`<user>.<name>`) with binding key `{message_type}`; sent by "
            f"`{user}`.",
            bindings=b.exchange_binding(topology.EVENTS),
            messages=[name],
        )
        b.operation(
            f"receive.{message_type}",
            action="receive",
            channel=key,
            summary=_doc(message)[0] or f"Receive `{message_type}` events",
            user=user,
            timestamp=True,
        )
    return {
        "title": "Orderflow for event listeners",
        "description": "A system that follows what happens (a BI, an archive, a chat robot) "
        "binds queues of its own to `orderflow.events` with the event types it was given.",
    }


def documents(
    *,
    version: str,
    host: str,
    vhost: str,
    departments: Sequence[str],
    service_users: Mapping[str, str] | None = None,
    department_user_pattern: str = "dept-{department}",
    submitter_user: str = "crm",
) -> dict[str, dict[str, Any]]:
    """party -> its AsyncAPI document."""
    users = busaccess.service_users(service_users)
    built: dict[str, dict[str, Any]] = {}
    for party in PARTIES:
        b = _Builder(vhost=vhost, service_users=users)
        if party == "department-system":
            info = department_document(b, departments, user_pattern=department_user_pattern)
        elif party == "order-submitter":
            info = submitter_document(b, user=submitter_user)
        else:
            info = listener_document(b)
        built[party] = b.document(version=version, host=host, **info)
    return built
