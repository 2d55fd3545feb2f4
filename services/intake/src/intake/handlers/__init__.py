"""One function per request, command or event: the order's changes and the messages they
cause, all in the caller's transaction (file uploads and bulk imports, which own their
transactions, take the pool). One module per concern, every public name re-exported here.
"""

from .commands import (
    command_order_id,
    on_submit_command,
    reply_conflict,
    submit_command,
    wait_for_decision,
    when_decided,
)
from .common import (
    API,
    BUS,
    IMPORT,
    Actor,
    AttachmentNotFound,
    IdempotencyKeyReused,
    NotPermitted,
    OrderNotFound,
    Outcome,
    Permits,
    RevisionNotFound,
    attachment_ref,
    bus_actor,
    fingerprint,
    parsed_document,
)
from .files import (
    NewFile,
    add_attachment,
    attachment,
    attachments_of,
    check_attachable,
    check_new_ids,
    pending_refs,
    remove_attachment,
    store_files,
)
from .history import revision_diff, revision_with_files, timeline
from .imports import import_order
from .orders import create_order, submit_order, update_order, withdraw_order
from .projection import (
    PENDING_DISCARDED,
    PENDING_EVENTS,
    PENDING_KEPT_AT_MOST,
    PENDING_KEPT_FOR,
    apply_pending_events,
    on_event,
)

__all__ = [
    "API",
    "BUS",
    "IMPORT",
    "PENDING_DISCARDED",
    "PENDING_EVENTS",
    "PENDING_KEPT_AT_MOST",
    "PENDING_KEPT_FOR",
    "Actor",
    "AttachmentNotFound",
    "IdempotencyKeyReused",
    "NewFile",
    "NotPermitted",
    "OrderNotFound",
    "Outcome",
    "Permits",
    "RevisionNotFound",
    "add_attachment",
    "apply_pending_events",
    "attachment",
    "attachment_ref",
    "attachments_of",
    "bus_actor",
    "check_attachable",
    "check_new_ids",
    "command_order_id",
    "create_order",
    "fingerprint",
    "import_order",
    "on_event",
    "on_submit_command",
    "parsed_document",
    "pending_refs",
    "remove_attachment",
    "reply_conflict",
    "revision_diff",
    "revision_with_files",
    "store_files",
    "submit_command",
    "submit_order",
    "timeline",
    "update_order",
    "wait_for_decision",
    "when_decided",
    "withdraw_order",
]
