"""JSON pointers (RFC 6901) and the difference between two JSON values, as pointers.

The whole document is the pointer `""`; `/a~1b/0` is the key `a/b` of the root object, then
its first item (`~` is written `~0`, `/` is written `~1`). Every service writes and reads
pointers through this module, so a key holding `/` or `~` means the same everywhere.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

#: The whole document.
ROOT = ""


def escape(token: str | int) -> str:
    """One reference token: `~` first, so the `~` written for `/` is not escaped again."""
    return str(token).replace("~", "~0").replace("/", "~1")


def unescape(token: str) -> str:
    """The key a reference token names: `~1` first, so `~01` stays `~1` (RFC 6901, 4)."""
    return token.replace("~1", "/").replace("~0", "~")


def join(tokens: Iterable[str | int], at: str = ROOT) -> str:
    """The pointer of a location (keys and list indexes) under the pointer `at`."""
    return at + "".join("/" + escape(token) for token in tokens)


def split(pointer: str) -> list[str]:
    """The keys (list indexes as text) a pointer names, from the root; [] for the root."""
    if pointer == ROOT:
        return []
    if not pointer.startswith("/"):
        raise ValueError(f"a JSON pointer starts with '/' or is empty, not {pointer!r}")
    return [unescape(token) for token in pointer[1:].split("/")]


class Change(NamedTuple):
    pointer: str
    old: Any
    new: Any


def diff(old: Any, new: Any, at: str = ROOT) -> list[Change]:
    """Every difference between two JSON values, at the deepest value that differs.

    Objects are compared key by key in sorted order (so the answer does not depend on the
    order the keys were stored in: PostgreSQL's jsonb keeps none), lists item by item; a
    key or item only in `new` is `old: None` with the whole new value, one only in `old`
    is `new: None` with the whole old value; a value that changes type is replaced whole
    (`1` and `1.0`, `true` and `1` are equal in Python but not in JSON). The same two
    values always give the same list."""
    if isinstance(old, dict) and isinstance(new, dict):
        changes: list[Change] = []
        for key in sorted(old.keys() | new.keys(), key=str):
            where = f"{at}/{escape(key)}"
            if key not in old:
                changes.append(Change(where, None, new[key]))
            elif key not in new:
                changes.append(Change(where, old[key], None))
            else:
                changes.extend(diff(old[key], new[key], where))
        return changes
    if isinstance(old, list) and isinstance(new, list):
        changes = []
        for index in range(max(len(old), len(new))):
            where = f"{at}/{index}"
            if index >= len(old):
                changes.append(Change(where, None, new[index]))
            elif index >= len(new):
                changes.append(Change(where, old[index], None))
            else:
                changes.extend(diff(old[index], new[index], where))
        return changes
    if type(old) is type(new) and old == new:
        return []
    return [Change(at, old, new)]
