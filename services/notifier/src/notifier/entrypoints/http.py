"""The in-app inbox over HTTP."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel

from orderflow.db import Pool
from orderflow.http import Problem

from ..adapters import repository


class Notification(BaseModel):
    id: UUID
    event_type: str
    order_id: UUID | None
    title: str
    body: str
    link: str
    data: dict[str, Any]
    created_at: datetime
    read_at: datetime | None


class InboxPage(BaseModel):
    items: list[Notification]
    total: int
    unread: int
    limit: int
    offset: int


def _pool(request: Request) -> Pool:
    return request.app.state.runtime.pool  # type: ignore[no-any-return]


router = APIRouter(prefix="/api/v1", tags=["inbox"])


@router.get("/inbox/{recipient}")
async def list_inbox(
    request: Request,
    recipient: str,
    unread: Annotated[bool, Query(description="Only unread notifications")] = False,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> InboxPage:
    """A person's in-app notifications, newest first, with the unread count."""
    rows, total, unread_count = await repository.inbox(
        _pool(request), recipient=recipient, unread_only=unread, limit=limit, offset=offset
    )
    return InboxPage(
        items=[Notification.model_validate(r) for r in rows],
        total=total,
        unread=unread_count,
        limit=limit,
        offset=offset,
    )


@router.post("/inbox/{recipient}/{notification_id}/read", status_code=204)
async def mark_read(request: Request, recipient: str, notification_id: UUID) -> None:
    """Mark one notification read."""
    if not await repository.mark_read(
        _pool(request), recipient=recipient, notification_id=notification_id
    ):
        raise Problem(404, "Notification not found", f"{notification_id} for {recipient}")
