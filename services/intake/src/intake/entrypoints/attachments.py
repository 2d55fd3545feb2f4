"""Files of an order over HTTP: upload (multipart, streamed, checked from the bytes),
list, download, remove."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Annotated, Any
from urllib.parse import quote
from uuid import UUID

import structlog
from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from orderflow import limits
from orderflow.db import Pool
from orderflow.http import Problem, ProblemDetails
from orderflow.messages import AttachmentKind, AttachmentRef
from orderflow.messages import Problem as FieldProblem

from .. import domain, handlers
from ..adapters import repository
from ..adapters.blobs import CHUNK_BYTES, BlobStore
from ..adapters.content import IncomingFile, TooLarge
from .access import Db, OrderId, ReadOrders, WriteOrders, order_not_found
from .http import (
    PROBLEMS,
    IfMatchOptional,
    PreferWait,
    decision_wait,
)

log = structlog.get_logger(__name__)

# room for the multipart boundaries, part headers and the `kind` field around the file
_ENVELOPE_BYTES = 64 * 1024
_MAX_FIELD_BYTES = 1024
_ENCODED = re.compile(r"%(22|[01][0-9A-Fa-f]|7[Ff])")


class AttachmentList(BaseModel):
    order_id: UUID
    revision: int = Field(description="The revision whose files these are")
    items: list[AttachmentRef]


class AttachmentAdded(BaseModel):
    order_id: UUID
    revision: int = Field(description="The open revision the file joined")
    attachment: AttachmentRef
    etag: str = Field(description="The order's new ETag")


UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["kind", "file"],
                    "properties": {
                        "kind": {"type": "string", "enum": [k.value for k in AttachmentKind]},
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": f"One of: {domain.ALLOWED_LABELS}. Its type is "
                            "read from its bytes; a declared type or a name that says "
                            "otherwise is refused",
                        },
                    },
                },
            }
        },
    }
}

AttachmentId = Annotated[UUID, Path(description="The file's id")]

router = APIRouter(prefix="/api/v1", tags=["attachments"], responses=PROBLEMS)


def _store(request: Request) -> BlobStore:
    return request.app.state.blobs  # type: ignore[no-any-return]


def _limit(request: Request) -> int:
    return int(request.app.state.settings.max_attachment_bytes)


def _too_large(limit: int) -> Problem:
    return Problem(
        413,
        "File too large",
        f"a file may have at most {limit} bytes ({limit / 1024 / 1024:g} MiB)",
        type_="urn:orderflow:problem:file-too-large",
        errors=[FieldProblem(pointer="/file", detail=f"larger than {limit} bytes")],
        extra={"limit": limit},
        # the rest of the upload is not read
        headers={"Connection": "close"},
    )


def _invalid(problems: list[FieldProblem]) -> Problem:
    return Problem(
        422,
        "Invalid upload",
        f"{len(problems)} problem(s) in the upload",
        type_="urn:orderflow:problem:invalid-request",
        errors=problems,
    )


@dataclass
class _Part:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    name: str = ""
    filename: str | None = None
    content_type: str | None = None
    value: bytearray = field(default_factory=bytearray)
    is_file: bool = False


@dataclass
class Upload:
    """What the multipart body held: its fields, and the file's name and declared type."""

    fields: dict[str, str] = field(default_factory=dict)
    file_seen: bool = False
    filename: str | None = None
    declared_type: str | None = None
    problems: list[FieldProblem] = field(default_factory=list)


# Longer than 60 lines: the streaming parser's callbacks share the upload's state; as
# closures over it they read as one parser, which they are.
async def read_multipart(request: Request, incoming: IncomingFile) -> Upload:
    """Stream a multipart/form-data body: the `file` part goes into `incoming` as it
    arrives (which stops the upload past its size limit), the other fields are kept."""
    ctype, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if ctype != b"multipart/form-data" or not boundary:
        raise Problem(
            415,
            "Send the file as multipart/form-data",
            "upload with Content-Type multipart/form-data, a `kind` field and a `file` part",
            type_="urn:orderflow:problem:unsupported-media-type",
        )
    upload = Upload()
    part = _Part()
    header_field = bytearray()
    header_value = bytearray()
    pending: list[bytes] = []

    def on_part_begin() -> None:
        nonlocal part
        part = _Part()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header_field.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header_value.extend(data[start:end])

    def on_header_end() -> None:
        part.headers[bytes(header_field).strip().lower()] = bytes(header_value).strip()
        header_field.clear()
        header_value.clear()

    def on_headers_finished() -> None:
        _, disposition = parse_options_header(part.headers.get(b"content-disposition", b""))
        part.name = disposition.get(b"name", b"").decode("utf-8", "replace")
        raw_name = disposition.get(b"filename")
        if part.name == "file" and upload.file_seen:
            # its bytes are not read: one upload, one file
            upload.problems.append(
                FieldProblem(pointer="/file", detail="one file per upload; send the others apart")
            )
        elif part.name == "file":
            part.is_file = True
            upload.file_seen = True
            # browsers send the name as raw UTF-8 bytes (RFC 7578), with a quote and control
            # characters percent-encoded (HTML's form encoding); the controls are then
            # removed from the name like any other
            name = raw_name.decode("utf-8", "replace") if raw_name else None
            upload.filename = _ENCODED.sub(lambda m: chr(int(m[1], 16)), name) if name else None
            declared = part.headers.get(b"content-type")
            upload.declared_type = declared.decode("latin-1") if declared else None

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if part.is_file:
            pending.append(data[start:end])
        elif len(part.value) < _MAX_FIELD_BYTES:
            part.value.extend(data[start : min(end, start + _MAX_FIELD_BYTES)])

    def on_part_end() -> None:
        if not part.is_file and part.name:
            upload.fields[part.name] = part.value.decode("utf-8", "replace").strip()

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    try:
        async for chunk in request.stream():
            parser.write(chunk)
            for piece in pending:
                incoming.write(piece)
            pending.clear()
        parser.finalize()
    except MultipartParseError as exc:
        raise _invalid(
            [FieldProblem(pointer="/", detail=f"not a valid multipart body: {exc}")]
        ) from exc
    return upload


def _kind(upload: Upload) -> tuple[AttachmentKind | None, list[FieldProblem]]:
    problems = []
    raw = upload.fields.get("kind")
    kind = None
    kinds = ", ".join(k.value for k in AttachmentKind)
    if not raw:
        problems.append(FieldProblem(pointer="/kind", detail=f"the kind is required: {kinds}"))
    else:
        try:
            kind = AttachmentKind(raw)
        except ValueError:
            problems.append(
                FieldProblem(pointer="/kind", detail=f"{raw!r} is not a kind of file: {kinds}")
            )
    return kind, problems


# Longer than 60 lines: the upload's steps in order (size, access, parse, type, store
# under the decision wait), with the temporary file closed in one `finally`.
@router.post(
    "/orders/{order_id}/attachments",
    status_code=201,
    response_model=AttachmentAdded,
    openapi_extra=UPLOAD_BODY,
    responses={
        413: {"model": ProblemDetails, "description": "The file is over the size limit"},
        415: {"model": ProblemDetails, "description": "Not an accepted kind of file"},
    },
)
async def upload_attachment(
    request: Request,
    response: Response,
    orders: WriteOrders,
    order_id: OrderId,
    pool: Db,
    if_match: IfMatchOptional = None,
    prefer: PreferWait = None,
) -> AttachmentAdded:
    """Attach a file to the order's open revision: `kind` and `file`, multipart. Its type
    is read from its bytes; nothing is stored when it is refused. On an order still under
    review here, it waits for the departments' decision like a revision (`PUT`)."""
    limit = _limit(request)
    declared_length = request.headers.get("content-length", "")
    if declared_length.isdigit() and int(declared_length) > limit + _ENVELOPE_BYTES:
        raise _too_large(limit)
    access = await orders.writable(order_id)
    handlers.check_attachable(access.order)

    incoming = IncomingFile(limit=limit)
    try:
        try:
            upload = await read_multipart(request, incoming)
        except TooLarge as exc:
            raise _too_large(limit) from exc
        new_file = _checked_file(upload, incoming)

        async def attempt() -> tuple[AttachmentRef, int]:
            return await handlers.add_attachment(
                pool,
                _store(request),
                order_id=order_id,
                file=new_file,
                channel=handlers.API,
                actor=access.actor,
                if_match=if_match,
                permits=access.permits,
            )

        ref, revision = await handlers.when_decided(
            pool,
            order_id=order_id,
            seconds=decision_wait(request.app.state.settings.revision_decision_wait, prefer),
            attempt=attempt,
        )
    finally:
        incoming.close()
    order = await _load_etag(pool, order_id)
    response.headers["ETag"] = order
    response.headers["Location"] = ref.download_path
    return AttachmentAdded(order_id=order_id, revision=revision, attachment=ref, etag=order)


def _checked_file(upload: Upload, incoming: IncomingFile) -> handlers.NewFile:
    """The uploaded file as the handlers store it, or every problem of the form at once;
    its type is read from its bytes."""
    kind, problems = _kind(upload)
    problems += upload.problems
    if not upload.file_seen:
        problems.append(FieldProblem(pointer="/file", detail="the file is required"))
    elif incoming.size == 0:
        problems.append(FieldProblem(pointer="/file", detail="the file is empty"))
    if problems or kind is None:
        raise _invalid(problems)
    accepted = domain.accept_file(
        detected=incoming.detect(),
        declared=upload.declared_type,
        filename=upload.filename,
    )
    return handlers.NewFile(
        kind=kind,
        name=accepted.name,
        content_type=accepted.content_type,
        size=incoming.size,
        sha256=incoming.sha256,
        chunks=lambda: incoming.chunks(CHUNK_BYTES),
    )


async def _load_etag(pool: Pool, order_id: UUID) -> str:
    row = await repository.get_order(pool, order_id=order_id)
    if row is None:
        raise order_not_found(order_id)
    return domain.etag(revision=row.current_revision, version=row.version)


@router.get("/orders/{order_id}/attachments", response_model=AttachmentList)
async def list_attachments(
    orders: ReadOrders,
    order_id: OrderId,
    pool: Db,
    revision: Annotated[
        int | None,
        Query(
            ge=1,
            le=limits.MAX_REVISION,
            description="A revision's files; the current one's by default",
        ),
    ] = None,
) -> AttachmentList:
    """The files of the order's current revision, or of the revision asked for."""
    await orders.readable(order_id)
    number, files = await handlers.attachments_of(pool, order_id=order_id, revision=revision)
    return AttachmentList(order_id=order_id, revision=number, items=files)


def content_disposition(name: str) -> str:
    """`attachment` with an ASCII fallback name and the real one in UTF-8 (RFC 6266 and
    RFC 5987), so `技术图纸.pdf` arrives as itself in every browser."""
    fallback = "".join(ch if 32 <= ord(ch) < 127 and ch not in {'"', "\\"} else "_" for ch in name)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


@router.get(
    "/orders/{order_id}/attachments/{attachment_id}",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/octet-stream": {}}, "description": "The file"}},
)
async def download_attachment(
    request: Request,
    orders: ReadOrders,
    order_id: OrderId,
    attachment_id: AttachmentId,
    pool: Db,
) -> StreamingResponse:
    """The file's bytes, with its content type (read from the bytes at upload) and name."""
    await orders.readable(order_id)
    ref = await handlers.attachment(pool, order_id=order_id, attachment_id=attachment_id)
    chunks: AsyncIterator[bytes] = _store(request).read(pool, sha256=ref.sha256)
    # the first chunk before the status line: once streaming, a missing file could only
    # break the connection
    first = await anext(chunks, None)
    if first is None:
        log.error("attachment bytes missing", order_id=str(order_id), sha256=ref.sha256)
        raise Problem(
            500,
            "File unavailable",
            f"the bytes of {ref.name!r} are missing from the store",
            type_="urn:orderflow:problem:attachment-unavailable",
        )

    async def body() -> AsyncIterator[bytes]:
        yield first
        async for chunk in chunks:
            yield chunk

    return StreamingResponse(
        body(),
        media_type=ref.content_type,
        headers={
            "Content-Disposition": content_disposition(ref.name),
            "Content-Length": str(ref.size),
            "ETag": f'"{ref.sha256}"',
            # the type was decided from the bytes; browsers must not guess another
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "private, max-age=86400, immutable",
        },
    )


@router.delete("/orders/{order_id}/attachments/{attachment_id}", status_code=204)
async def delete_attachment(
    request: Request,
    orders: WriteOrders,
    order_id: OrderId,
    attachment_id: AttachmentId,
    pool: Db,
    if_match: IfMatchOptional = None,
    prefer: PreferWait = None,
) -> Response:
    """Take a file off the order's open revision; submitted revisions keep theirs. On an
    order still under review here, it waits for the departments' decision like `PUT`."""
    access = await orders.writable(order_id)

    async def attempt() -> int:
        return await handlers.remove_attachment(
            pool,
            _store(request),
            order_id=order_id,
            attachment_id=attachment_id,
            channel=handlers.API,
            actor=access.actor,
            if_match=if_match,
            permits=access.permits,
        )

    await handlers.when_decided(
        pool,
        order_id=order_id,
        seconds=decision_wait(request.app.state.settings.revision_decision_wait, prefer),
        attempt=attempt,
    )
    return Response(status_code=204, headers={"ETag": await _load_etag(pool, order_id)})
