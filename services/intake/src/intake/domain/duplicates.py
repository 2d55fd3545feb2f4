"""Likely duplicates across channels: the same purchase-order reference of the same customer."""

from __future__ import annotations

import unicodedata


def _fold(text: str | None) -> str:
    """Letters and digits only, case and width folded: `PO-SJPM 2026/0042` and
    `po sjpm-2026-0042` are the same reference, `Co., Ltd.` and `Co Ltd` the same name."""
    folded = unicodedata.normalize("NFKC", text or "").casefold()
    return "".join(ch for ch in folded if unicodedata.category(ch)[0] in "LN")


def duplicate_key(*, customer_name: str | None, external_ref: str | None) -> str | None:
    """The key two orders of the same customer purchase order share; None without a ref."""
    ref = _fold(external_ref)
    if not ref:
        return None
    return f"{_fold(customer_name)}\x1f{ref}"
