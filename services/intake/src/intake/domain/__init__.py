"""Order rules: statuses, what may be edited, submitted and withdrawn, the self-check, files,
revisions and their differences, duplicates, the ETag, and how events move the read model
and make the timeline. Pure functions, no I/O; one module per concern, every public name
re-exported here.
"""

# re-exported: callers and tests name the order type beside the rules that use it
from orderflow.messages import OrderType

from .changes import diff, revision_changes
from .document import Checked, check_document, pointer_of
from .duplicates import duplicate_key
from .files import (
    ALLOWED_FILES,
    ALLOWED_LABELS,
    DOCX,
    MAX_NAME_BYTES,
    MAX_NAME_CHARS,
    XLSX,
    AcceptedFile,
    FileRefused,
    FileType,
    accept_file,
    download_path,
    sanitise_filename,
)
from .projection import (
    EVENT_STATUS,
    PROJECTED_EVENTS,
    REFUSED_EVENT,
    WITHDRAWN_EVENT,
    Projection,
    project,
)
from .selfcheck import ISO_4217, WRITTEN_CONFIRMATION_FROM, important_because, self_check
from .statuses import (
    EDITABLE,
    AlreadySubmitted,
    EditTarget,
    NotEditable,
    RuleViolation,
    SelfCheckFailed,
    Status,
    check_editable,
    check_submittable,
    edit_target,
)
from .timeline import DESCRIBED_EVENTS, Described, describe, timeline_payload
from .versions import (
    DECIDING,
    Conflict,
    DecisionPending,
    StaleRevision,
    StaleVersion,
    UnknownRevision,
    check_decided,
    check_revises,
    check_version,
    decision_arrived,
    etag,
    if_match_names,
)
from .withdrawal import WITHDRAWABLE, NotWithdrawable, check_withdrawable, withdrawal_pending

__all__ = [
    "ALLOWED_FILES",
    "ALLOWED_LABELS",
    "DECIDING",
    "DESCRIBED_EVENTS",
    "DOCX",
    "EDITABLE",
    "EVENT_STATUS",
    "ISO_4217",
    "MAX_NAME_BYTES",
    "MAX_NAME_CHARS",
    "PROJECTED_EVENTS",
    "REFUSED_EVENT",
    "WITHDRAWABLE",
    "WITHDRAWN_EVENT",
    "WRITTEN_CONFIRMATION_FROM",
    "XLSX",
    "AcceptedFile",
    "AlreadySubmitted",
    "Checked",
    "Conflict",
    "DecisionPending",
    "Described",
    "EditTarget",
    "FileRefused",
    "FileType",
    "NotEditable",
    "NotWithdrawable",
    "OrderType",
    "Projection",
    "RuleViolation",
    "SelfCheckFailed",
    "StaleRevision",
    "StaleVersion",
    "Status",
    "UnknownRevision",
    "accept_file",
    "check_decided",
    "check_document",
    "check_editable",
    "check_revises",
    "check_submittable",
    "check_version",
    "check_withdrawable",
    "decision_arrived",
    "describe",
    "diff",
    "download_path",
    "duplicate_key",
    "edit_target",
    "etag",
    "if_match_names",
    "important_because",
    "pointer_of",
    "project",
    "revision_changes",
    "sanitise_filename",
    "self_check",
    "timeline_payload",
    "withdrawal_pending",
]
