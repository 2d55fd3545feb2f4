"""JSON pointers (RFC 6901) and the one JSON diff."""

from __future__ import annotations

from typing import Any

import pytest

from orderflow import jsonpointer
from orderflow.jsonpointer import Change


@pytest.mark.parametrize(
    ("key", "token"),
    [("a", "a"), ("a/b", "a~1b"), ("m~n", "m~0n"), ("~1", "~01"), ("/~", "~1~0"), (3, "3")],
)
def test_escape_and_unescape_are_inverse(key: str | int, token: str) -> None:
    assert jsonpointer.escape(key) == token
    assert jsonpointer.unescape(token) == str(key)


def test_join_and_split() -> None:
    assert jsonpointer.join([]) == ""
    assert jsonpointer.join(["lines", 0, "a/b"]) == "/lines/0/a~1b"
    assert jsonpointer.join(["x"], at="/order") == "/order/x"
    # RFC 6901's examples: "" is the whole document, "/" the key "" of the root object
    assert jsonpointer.split("") == []
    assert jsonpointer.split("/") == [""]
    assert jsonpointer.split("/a~1b/m~0n") == ["a/b", "m~n"]
    with pytest.raises(ValueError, match="starts with"):
        jsonpointer.split("lines/0")


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ({"a": 1}, {"a": 1}, []),
        ({"a": 1}, {"a": 2}, [Change("/a", 1, 2)]),
        # a key removed or added is reported whole, not leaf by leaf
        ({"a": {"b": 1, "c": 2}}, {}, [Change("/a", {"b": 1, "c": 2}, None)]),
        ({}, {"a": [1]}, [Change("/a", None, [1])]),
        ({"l": [1, 2]}, {"l": [1, 3, 4]}, [Change("/l/1", 2, 3), Change("/l/2", None, 4)]),
        ({"l": [1, 2]}, {"l": [1]}, [Change("/l/1", 2, None)]),
        # equal in Python, not in JSON
        ({"n": 1}, {"n": 1.0}, [Change("/n", 1, 1.0)]),
        ({"n": True}, {"n": 1}, [Change("/n", True, 1)]),
        ({"x": {"k": 1}}, {"x": [1]}, [Change("/x", {"k": 1}, [1])]),
        # keys in sorted order; escaped
        ({"b/": 1, "a~": 1}, {"b/": 2, "a~": 2}, [Change("/a~0", 1, 2), Change("/b~1", 1, 2)]),
        # the root is ""
        (1, 2, [Change("", 1, 2)]),
    ],
)
def test_diff(old: Any, new: Any, expected: list[Change]) -> None:
    assert jsonpointer.diff(old, new) == expected
    assert jsonpointer.diff(old, new, "/order") == [
        Change("/order" + c.pointer, c.old, c.new) for c in expected
    ]


def test_diff_points_at_what_it_reports() -> None:
    old = {"lines": [{"attributes": {"a/b": "x"}}], "terms": "30%"}
    new = {"lines": [{"attributes": {"a/b": "y"}}], "terms": "50%"}
    for change in jsonpointer.diff(old, new):
        at: Any = old
        for token in jsonpointer.split(change.pointer):
            at = at[int(token)] if isinstance(at, list) else at[token]
        assert at == change.old
