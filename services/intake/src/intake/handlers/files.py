"""Files of an order: uploaded, fetched, removed, listed."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg
import structlog

from orderflow.db import Connection, Pool, transaction
from orderflow.messages import (
    AttachmentKind,
    AttachmentRef,
    OrderDocument,
    Problem,
)

from .. import domain
from ..adapters import repository
from ..adapters.blobs import BlobStore
from ..domain import Status
from .common import (
    Actor,
    AttachmentNotFound,
    OrderNotFound,
    Permits,
    RevisionNotFound,
    attachment_ref,
    files_of,
    salesperson_of,
)
from .revisions import locked_order, open_draft

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class NewFile:
    """A file that arrived whole and passed the checks, ready to be stored."""

    kind: AttachmentKind
    name: str
    content_type: str
    size: int
    sha256: str
    chunks: Callable[[], Iterable[bytes]]
    #: the id it is stored under; a new one when None
    attachment_id: UUID | None = None


def pending_refs(order_id: UUID, files: Sequence[NewFile]) -> list[AttachmentRef]:
    """The files as they will be once stored (each with its id), for the self-check that
    runs before they are."""
    return [
        AttachmentRef(
            id=f.attachment_id,
            name=f.name,
            kind=f.kind,
            content_type=f.content_type,
            size=f.size,
            sha256=f.sha256,
            download_path=domain.download_path(order_id, f.attachment_id),
        )
        for f in files
        if f.attachment_id is not None
    ]


async def check_new_ids(conn: Connection, files: Sequence[NewFile]) -> None:
    """The ids a command chose for its files are new: refused naming `/attachments/<n>/id`."""
    chosen = [f.attachment_id for f in files if f.attachment_id is not None]
    taken = await repository.attachment_ids_in_use(conn, ids=chosen) if chosen else set()
    problems = [
        Problem(
            pointer=f"/attachments/{n}/id",
            detail=f"{f.attachment_id} is the id of a file stored already; choose a new one "
            "(a revision keeps the files of the one it follows: send only new files)",
        )
        for n, f in enumerate(files)
        if f.attachment_id in taken
    ]
    if problems:
        raise domain.SelfCheckFailed(problems, invalid=len(problems))


async def _store_file(
    conn: Connection,
    store: BlobStore,
    *,
    order_id: UUID,
    revision: int,
    file: NewFile,
    salesperson: dict[str, Any],
    actor: Actor,
) -> AttachmentRef:
    """The bytes (once per SHA-256), the attachment on the revision, its timeline entry."""
    await store.put(conn, sha256=file.sha256, size=file.size, chunks=file.chunks())
    row = await repository.insert_attachment(
        conn,
        attachment_id=file.attachment_id or uuid.uuid4(),
        order_id=order_id,
        revision=revision,
        kind=file.kind.value,
        name=file.name,
        content_type=file.content_type,
        size=file.size,
        sha256=file.sha256,
    )
    ref = attachment_ref(row)
    await repository.add_activity(
        conn,
        order_id=order_id,
        activity="attachment.added",
        revision=revision,
        payload={"attachment": ref.model_dump(mode="json"), "salesperson": salesperson},
        occurred_at=datetime.now(UTC),
        actor=actor,
    )
    return ref


async def store_files(
    conn: Connection,
    store: BlobStore,
    *,
    order_id: UUID,
    revision: int,
    files: Sequence[NewFile],
    document: OrderDocument,
    actor: Actor,
) -> list[AttachmentRef]:
    """Files a command named by URL, on the revision it writes, in its transaction."""
    stored = [
        await _store_file(
            conn,
            store,
            order_id=order_id,
            revision=revision,
            file=f,
            salesperson=salesperson_of(document),
            actor=actor,
        )
        for f in files
    ]
    for ref in stored:
        log.info(
            "file attached from a URL",
            order_id=str(order_id),
            revision=revision,
            kind=ref.kind.value,
            size=ref.size,
            content_type=ref.content_type,
        )
    return stored


def check_attachable(order: repository.OrderRow) -> None:
    """Before an upload is read: the order takes files (checked again, under its lock, when
    the file is stored). Under review, the decision may be on its way: it is waited for
    once the file is read."""
    status = Status(order.status)
    if status not in domain.DECIDING:
        domain.check_editable(status)


async def add_attachment(
    pool: Pool,
    store: BlobStore,
    *,
    order_id: UUID,
    file: NewFile,
    channel: str,
    actor: Actor,
    if_match: str | None = None,
    permits: Permits | None = None,
) -> tuple[AttachmentRef, int]:
    """Store a file on the order's open revision; the file and the revision's new version
    commit together or not at all. Returns the file and the revision it joined."""
    for attempt in (1, 2):
        try:
            async with transaction(pool) as conn:
                order = await locked_order(conn, order_id, if_match=if_match, permits=permits)
                domain.check_decided(Status(order.status), current_revision=order.current_revision)
                revision = await open_draft(conn, order=order, channel=channel)
                await repository.bump_version(conn, order_id=order_id)
                current = await repository.get_revision(conn, order_id=order_id, revision=revision)
                assert current is not None
                ref = await _store_file(
                    conn,
                    store,
                    order_id=order_id,
                    revision=revision,
                    file=file,
                    salesperson=salesperson_of(current["document"]),
                    actor=actor,
                )
        except asyncpg.ForeignKeyViolationError:
            # the same bytes were discarded by a deletion that committed between finding
            # them stored and referring to them: store them again
            if attempt == 2:
                raise
            continue
        log.info(
            "file attached",
            order_id=str(order_id),
            revision=revision,
            kind=file.kind.value,
            size=file.size,
            content_type=file.content_type,
        )
        return ref, revision
    raise AssertionError("unreachable")


async def remove_attachment(
    pool: Pool,
    store: BlobStore,
    *,
    order_id: UUID,
    attachment_id: UUID,
    channel: str,
    actor: Actor,
    if_match: str | None = None,
    permits: Permits | None = None,
) -> int:
    """Take a file off the order's open revision; a submitted revision keeps it. The bytes
    go when no revision of any order holds them any more. Returns the open revision."""
    async with transaction(pool) as conn:
        order = await locked_order(conn, order_id, if_match=if_match, permits=permits)
        domain.check_decided(Status(order.status), current_revision=order.current_revision)
        domain.check_editable(Status(order.status))
        files = {f.id: f for f in await files_of(conn, order_id, order.current_revision)}
        ref = files.get(attachment_id)
        if ref is None:
            raise AttachmentNotFound(order_id, attachment_id, " on its current revision")
        revision = await open_draft(conn, order=order, channel=channel)
        await repository.unlink_attachment(
            conn, order_id=order_id, revision=revision, attachment_id=attachment_id
        )
        forgotten = await repository.delete_attachment_if_unused(conn, attachment_id=attachment_id)
        await repository.bump_version(conn, order_id=order_id)
        current = await repository.get_revision(conn, order_id=order_id, revision=revision)
        assert current is not None
        await repository.add_activity(
            conn,
            order_id=order_id,
            activity="attachment.removed",
            revision=revision,
            payload={
                "attachment": ref.model_dump(mode="json"),
                "salesperson": salesperson_of(current["document"]),
            },
            occurred_at=datetime.now(UTC),
            actor=actor,
        )
    if forgotten:
        # after the commit: had it rolled back, the bytes would still be needed
        await store.discard_if_unused(pool, sha256=ref.sha256)
    return revision


async def attachments_of(
    pool: Pool, *, order_id: UUID, revision: int | None
) -> tuple[int, list[AttachmentRef]]:
    """The files of a revision (the current one by default)."""
    order = await repository.get_order(pool, order_id=order_id)
    if order is None:
        raise OrderNotFound(order_id)
    wanted = order.current_revision if revision is None else revision
    if wanted > order.current_revision:
        raise RevisionNotFound(order_id, wanted)
    return wanted, await files_of(pool, order_id, wanted)


async def attachment(pool: Pool, *, order_id: UUID, attachment_id: UUID) -> AttachmentRef:
    row = await repository.get_attachment(pool, order_id=order_id, attachment_id=attachment_id)
    if row is None:
        raise AttachmentNotFound(order_id, attachment_id)
    return attachment_ref(row)
