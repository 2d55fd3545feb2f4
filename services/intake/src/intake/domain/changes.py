"""Revisions: what changed between two of them, field by field."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from orderflow import jsonpointer
from orderflow.messages import (
    AttachmentRef,
    FieldChange,
)

#: Where a whole-value change is reported: intake has always answered `/` there (RFC 6901's
#: whole document is `""`); only two values that are not both objects give it, never two
#: orders, and the published form is kept so that no reader of the API sees it change.
WHOLE_VALUE = "/"


def diff(old: Any, new: Any) -> list[FieldChange]:
    """Every difference between two JSON values (`orderflow.jsonpointer.diff`: the deepest
    value that differs, a key or item added or removed reported whole), as the changes
    `order.submitted` carries."""
    return [
        FieldChange(pointer=c.pointer or WHOLE_VALUE, old=c.old, new=c.new)
        for c in jsonpointer.diff(old, new)
    ]


def _file_entry(ref: AttachmentRef) -> dict[str, Any]:
    return ref.model_dump(mode="json", exclude={"id"})


def revision_changes(
    *,
    old_document: Mapping[str, Any],
    old_attachments: Sequence[AttachmentRef],
    new_document: Mapping[str, Any],
    new_attachments: Sequence[AttachmentRef],
) -> list[FieldChange]:
    """What a reviewer needs to see between two revisions: the document's fields, then the
    files removed and added, each as `/attachments/<attachment id>`."""
    changes = diff(dict(old_document), dict(new_document))
    old_files = {a.id: a for a in old_attachments}
    new_files = {a.id: a for a in new_attachments}
    for ref in old_attachments:
        if ref.id not in new_files:
            changes.append(
                FieldChange(
                    pointer=jsonpointer.join(["attachments", str(ref.id)]),
                    old=_file_entry(ref),
                    new=None,
                )
            )
    for ref in new_attachments:
        if ref.id not in old_files:
            changes.append(
                FieldChange(
                    pointer=jsonpointer.join(["attachments", str(ref.id)]),
                    old=None,
                    new=_file_entry(ref),
                )
            )
    return changes
