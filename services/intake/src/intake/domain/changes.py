"""Revisions: what changed between two of them, field by field."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from orderflow.messages import (
    AttachmentRef,
    FieldChange,
)


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def diff(old: Any, new: Any, pointer: str = "") -> list[FieldChange]:
    """Every difference between two JSON values, as JSON pointers with the old and the new
    value. Objects are compared key by key in sorted order (so the answer does not depend
    on how the documents were stored: PostgreSQL's jsonb keeps no key order), lists item by
    item (an item added at the end is `old: null`, one removed `new: null`); a value that
    changes type is replaced whole. The same two values always give the same list."""
    if isinstance(old, dict) and isinstance(new, dict):
        changes: list[FieldChange] = []
        for key in sorted(old.keys() | new.keys(), key=str):
            at = f"{pointer}/{_escape(str(key))}"
            if key not in old:
                changes.append(FieldChange(pointer=at, old=None, new=new[key]))
            elif key not in new:
                changes.append(FieldChange(pointer=at, old=old[key], new=None))
            else:
                changes.extend(diff(old[key], new[key], at))
        return changes
    if isinstance(old, list) and isinstance(new, list):
        changes = []
        for index in range(max(len(old), len(new))):
            at = f"{pointer}/{index}"
            if index >= len(old):
                changes.append(FieldChange(pointer=at, old=None, new=new[index]))
            elif index >= len(new):
                changes.append(FieldChange(pointer=at, old=old[index], new=None))
            else:
                changes.extend(diff(old[index], new[index], at))
        return changes
    # `1` and `1.0`, `true` and `1` compare equal in Python but not in JSON
    if type(old) is type(new) and old == new:
        return []
    return [FieldChange(pointer=pointer or "/", old=old, new=new)]


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
                FieldChange(pointer=f"/attachments/{ref.id}", old=_file_entry(ref), new=None)
            )
    for ref in new_attachments:
        if ref.id not in old_files:
            changes.append(
                FieldChange(pointer=f"/attachments/{ref.id}", old=None, new=_file_entry(ref))
            )
    return changes
