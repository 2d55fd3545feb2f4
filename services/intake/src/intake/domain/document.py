"""The document as it arrived: its type errors and the rules over what did parse, together.

`check_document` takes the document as it arrived (JSON) and reports every problem at once:
the type errors of its fields, and the self-check's rules over the parts that did parse.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from pydantic import ValidationError

from orderflow import jsonpointer
from orderflow.messages import (
    AttachmentRef,
    OrderDocument,
    Problem,
)

from .selfcheck import problem_at, self_check
from .statuses import SelfCheckFailed


def pointer_of(loc: Sequence[int | str]) -> str:
    """The JSON pointer (RFC 6901) of a location in the document; `/` for the whole, as
    intake's problems have always said (a body that is not an object at all)."""
    return jsonpointer.join(loc) or "/"


def _under(pointer: str, base: str) -> bool:
    return base == "/" or pointer == base or pointer.startswith(base + "/")


#: Stand-ins for required parts the rules never look at, so a broken salesperson does not
#: keep the rest of the document from being checked.
_STAND_INS: Mapping[str, Any] = {"salesperson": {"id": "unknown"}}


def _without(document: dict[str, Any], loc: Sequence[int | str]) -> str | None:
    """Take out the deepest part of `document` along `loc` that exists (an object's key
    goes, a list's item becomes an empty object, so the items after it keep their place);
    its pointer, or None when nothing below the top could go."""
    node: Any = document
    parent: Any = None
    path: list[int | str] = []
    for part in loc:
        here = isinstance(node, dict) and part in node
        here = here or (isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node))
        if not here:
            break
        path.append(part)
        parent, node = node, node[part]
    if not path:
        return None
    last = path[-1]
    if isinstance(parent, list):
        if parent[int(last)] == {}:
            return None
        parent[int(last)] = {}
    elif len(path) == 1 and isinstance(last, str) and last in _STAND_INS:
        if parent[last] == _STAND_INS[last]:
            return None
        parent[last] = copy.deepcopy(_STAND_INS[last])
    else:
        del parent[last]
    return pointer_of(path)


def _missing_at_top(document: dict[str, Any], loc: Sequence[int | str]) -> str | None:
    # a required part the rules do not need, missing altogether: put its stand-in
    if len(loc) == 1 and loc[0] in _STAND_INS and loc[0] not in document:
        document[str(loc[0])] = copy.deepcopy(_STAND_INS[str(loc[0])])
        return pointer_of(loc)
    return None


#: Each pass takes out at least one part, a parent when its child could not go alone; a
#: document is never nested deeper than this.
_PASSES = 8


def _what_parses(raw: dict[str, Any], errors: list[Any]) -> tuple[OrderDocument | None, set[str]]:
    """The document without its broken parts, and where they were; None when a part the
    rules cannot do without (the order type) is broken."""
    partial = copy.deepcopy(raw)
    removed: set[str] = set()
    for _ in range(_PASSES):
        taken = False
        for err in errors:
            loc = tuple(err["loc"])
            at = _without(partial, loc) or _missing_at_top(partial, loc)
            if at is not None:
                removed.add(at)
                taken = True
        try:
            return OrderDocument.model_validate(partial), removed
        except ValidationError as exc:
            errors = exc.errors()
        if not taken:
            break
    return None, removed


@dataclass(frozen=True)
class Checked:
    """A document as it arrived, checked: the order when every field has its type (None
    otherwise), and every problem, type errors first."""

    document: OrderDocument | None
    problems: list[Problem]
    invalid: int = 0

    def refuse(self) -> None:
        """Raise SelfCheckFailed when there is any problem."""
        if self.problems:
            raise SelfCheckFailed(self.problems, invalid=self.invalid)


def check_document(
    raw: Any, *, today: date, attachments: Sequence[AttachmentRef] | None
) -> Checked:
    """Every problem of a document as it arrived (parsed JSON), at once: each field that is
    not of its type, and then, unless `attachments` is None (a draft being saved, which
    need not be complete), the self-check's rules over the parts of the document that did
    parse, with the files of the revision being submitted (none for a one-step submission).
    Each problem has the JSON pointer of its field; a rule is not reported for a field that
    already has a type error."""
    try:
        document = OrderDocument.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors()
    else:
        rules = (
            []
            if attachments is None
            else self_check(document, today=today, attachments=attachments)
        )
        return Checked(document, rules)
    invalid = [problem_at(pointer_of(err["loc"]), str(err["msg"])) for err in errors]
    if attachments is None or not isinstance(raw, dict):
        return Checked(None, invalid, len(invalid))
    partial, removed = _what_parses(raw, errors)
    if partial is None:
        return Checked(None, invalid, len(invalid))
    broken = removed | {p.pointer for p in invalid}
    rules = [
        p
        for p in self_check(partial, today=today, attachments=attachments)
        if not any(_under(p.pointer, at) for at in broken)
    ]
    return Checked(None, invalid + rules, len(invalid))
