"""Contracts over HTTP: read them, download their documents, and record what happens to them
(sent to the customer, signed, voided).

A contract belongs to the salesperson of its order: people see it as they see the order
(themselves, their sales manager), systems with contracts:read or contracts:write see every
one; anyone else gets the same 404 as for a missing contract. Sending and uploading the signed
copy are for the owner, their manager and contracts:write; voiding for the manager and
contracts:write. Who did it is the authenticated caller, never a name in the request."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import quote
from uuid import UUID

import structlog
from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from starlette.datastructures import UploadFile

from orderflow import limits
from orderflow.auth import AUTH_RESPONSES, Caller, forbidden, require
from orderflow.auth.identity import CONTRACTS_READ, CONTRACTS_WRITE, SALES_MANAGER, SALESPERSON
from orderflow.db import Pool, transaction
from orderflow.http import (
    PROBLEM_RESPONSES,
    FieldProblem,
    Problem,
    ProblemDetails,
    problem_response,
)
from orderflow.messages import Language
from orderflow.messages.base import Chars, Timestamp

from .. import domain, handlers, store
from ..adapters import repository
from ..domain import ContractContent, ContractStatus, DocumentKind
from ..settings import Settings

log = structlog.get_logger(__name__)

API = "/api/v1"


class DocumentLink(BaseModel):
    sha256: str = Field(description="SHA-256 of the stored bytes, checked whenever served")
    href: str = Field(description="Where to download it")


class Contract(BaseModel):
    id: UUID
    number: str
    order_id: UUID
    revision: int
    status: ContractStatus
    language: Language
    drafted_at: Timestamp
    status_changed_at: Timestamp
    superseded_by: UUID | None
    sent_at: Timestamp | None
    sent_by: str | None = Field(description="Who recorded the sending (the caller's id)")
    signed_at: Timestamp | None
    voided_at: Timestamp | None
    void_reason: str | None
    voided_by: str | None = Field(description="Who voided it (the caller's id)")
    document: DocumentLink | None = Field(description="The contract as drafted, as PDF")
    signed_copy: DocumentLink | None = Field(description="The copy the customer signed")
    content_version: int
    content: ContractContent


class ContractList(BaseModel):
    items: list[Contract]


class VoidContract(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a typo is refused, not ignored

    reason: Annotated[
        str,
        StringConstraints(strip_whitespace=True, min_length=1, max_length=2000),
        Chars(limits.REMARK, min_length=1, lines=True),
    ] = Field(description="Why the contract will not be signed")


Reader = Annotated[
    Caller, Depends(require(SALESPERSON, SALES_MANAGER, CONTRACTS_READ, CONTRACTS_WRITE))
]
Sender = Annotated[Caller, Depends(require(SALESPERSON, SALES_MANAGER, CONTRACTS_WRITE))]
Voider = Annotated[Caller, Depends(require(SALES_MANAGER, CONTRACTS_WRITE))]


def _sees(caller: Caller, salesperson_id: str) -> bool:
    # a system's order scopes say nothing about contracts: only its contract scopes count
    return caller.has(CONTRACTS_READ, CONTRACTS_WRITE) or (
        caller.kind == "person" and caller.acts_for(salesperson_id)
    )


def _may_change(caller: Caller, salesperson_id: str, *, managers_only: bool = False) -> bool:
    if caller.has(CONTRACTS_WRITE):
        return True
    if caller.kind != "person" or (managers_only and not caller.has(SALES_MANAGER)):
        return False
    return caller.acts_for(salesperson_id, write=True)


def _pool(request: Request) -> Pool:
    return request.app.state.runtime.pool  # type: ignore[no-any-return]


def _settings(request: Request) -> Settings:
    settings = request.app.state.runtime.settings
    assert isinstance(settings, Settings)
    return settings


def _now() -> datetime:
    return datetime.now(UTC)


DbPool = Annotated[Pool, Depends(_pool)]
ServiceSettings = Annotated[Settings, Depends(_settings)]
Now = Annotated[datetime, Depends(_now)]


def _contract(record: store.Contract) -> Contract:
    base = f"{API}/contracts/{record.id}"
    document = signed = None
    if record.document_sha256 is not None:
        document = DocumentLink(sha256=record.document_sha256, href=f"{base}/document")
    if record.signed_copy_sha256 is not None:
        signed = DocumentLink(sha256=record.signed_copy_sha256, href=f"{base}/signed-copy")
    return Contract.model_validate({**vars(record), "document": document, "signed_copy": signed})


def _not_found(exc: handlers.ContractNotFound | handlers.DocumentNotFound) -> Problem:
    title = (
        "Contract not found"
        if isinstance(exc, handlers.ContractNotFound)
        else "Contract document not found"
    )
    return Problem(404, title, str(exc), type_="urn:orderflow:problem:not-found")


def install_error_handlers(app: FastAPI) -> None:
    """What the handlers raise, answered the same way by every route: registered once."""

    async def not_found(
        request: Request, exc: handlers.ContractNotFound | handlers.DocumentNotFound
    ) -> Response:
        return problem_response(_not_found(exc), request)

    async def conflict(request: Request, exc: domain.InvalidTransition) -> Response:
        return problem_response(_conflict(exc), request)

    async def corrupt(request: Request, exc: domain.DocumentCorrupt) -> Response:
        return problem_response(_corrupt(request, exc), request)

    app.add_exception_handler(handlers.ContractNotFound, not_found)  # type: ignore[arg-type]
    app.add_exception_handler(handlers.DocumentNotFound, not_found)  # type: ignore[arg-type]
    app.add_exception_handler(domain.InvalidTransition, conflict)  # type: ignore[arg-type]
    app.add_exception_handler(domain.DocumentCorrupt, corrupt)  # type: ignore[arg-type]


def _corrupt(request: Request, exc: domain.DocumentCorrupt) -> Problem:
    contract_id = request.path_params.get("contract_id")
    kind = "signed copy" if request.url.path.endswith("/signed-copy") else "drafted"
    log.error(
        "stored contract document does not match its hash; not served",
        contract_id=str(contract_id),
        kind=kind.replace(" ", "_"),
        expected_sha256=exc.expected,
        actual_sha256=exc.actual,
    )
    return Problem(
        500,
        "Stored document is corrupt",
        f"the stored {kind} of contract {contract_id} does not "
        "match the SHA-256 recorded when it was stored, so it is not served; "
        "operations have been alerted by the service log",
        type_="urn:orderflow:problem:document-corrupt",
    )


def _missing(contract_id: UUID) -> Problem:
    return Problem(
        404,
        "Contract not found",
        f"no contract {contract_id}",
        type_="urn:orderflow:problem:not-found",
    )


async def _visible(request: Request, caller: Caller, contract_id: UUID) -> store.Contract:
    """The contract, if the caller may see it; 404 as for a missing one otherwise."""
    record = await repository.reader(_pool(request)).get(contract_id=contract_id)
    if record is None or not _sees(caller, record.salesperson_id):
        raise _missing(contract_id)
    return record


async def _changeable(
    request: Request, caller: Caller, contract_id: UUID, *, managers_only: bool = False
) -> None:
    record = await _visible(request, caller, contract_id)
    if not _may_change(caller, record.salesperson_id, managers_only=managers_only):
        who = (
            "the salesperson's sales manager"
            if managers_only
            else "its salesperson, their sales manager"
        )
        raise forbidden(f"only {who} or a contracts:write system may do this to {contract_id}")


def _conflict(exc: domain.InvalidTransition) -> Problem:
    return Problem(
        409,
        f"The contract cannot be {domain.past_tense(exc.action)}",
        str(exc),
        type_="urn:orderflow:problem:contract-state",
        extra={"current_status": exc.current.value, "allowed_from": exc.allowed},
    )


async def _reload(request: Request, contract_id: UUID) -> Contract:
    record = await repository.reader(_pool(request)).get(contract_id=contract_id)
    assert record is not None  # it was acted on in a committed transaction; never deleted
    return _contract(record)


Responses = dict[int | str, dict[str, Any]]

NOT_FOUND: Responses = {404: {"model": ProblemDetails, "description": "No such contract"}}
CONFLICT: Responses = {
    409: {
        "model": ProblemDetails,
        "description": "Not possible in the contract's current status (`current_status`)",
    }
}

router = APIRouter(
    prefix=API, tags=["contracts"], responses={**PROBLEM_RESPONSES, **AUTH_RESPONSES}
)


@router.get("/contracts/{contract_id}", responses=NOT_FOUND)
async def get_contract(request: Request, caller: Reader, contract_id: UUID) -> Contract:
    """One contract: its number, status and every term as drafted."""
    return _contract(await _visible(request, caller, contract_id))


@router.get("/contracts", responses=NOT_FOUND)
async def list_contracts(
    request: Request,
    caller: Reader,
    order_id: Annotated[UUID, Query(description="The order whose contracts to list")],
) -> ContractList:
    """The contracts of an order, newest revision first. 404 for a person who may see none of
    them (as for an order they do not have)."""
    records = await repository.reader(_pool(request)).of_order(order_id=order_id)
    seen = [r for r in records if _sees(caller, r.salesperson_id)]
    if not seen and not caller.has(CONTRACTS_READ, CONTRACTS_WRITE):
        raise Problem(
            404,
            "Contracts not found",
            f"no contracts of order {order_id}",
            type_="urn:orderflow:problem:not-found",
        )
    return ContractList(items=[_contract(r) for r in seen])


_UNSAFE_IN_NAME = re.compile(r'[\x00-\x1f\x7f"\\/:*?<>|;]')


def content_disposition(file_name: str) -> str:
    """`attachment` with the name both as plain ASCII (for old clients) and RFC 5987 encoded
    UTF-8, so a number such as 合同/2026-7 arrives intact and cannot break the header."""
    safe = _UNSAFE_IN_NAME.sub("-", file_name)
    ascii_name = safe.encode("ascii", "replace").decode("ascii").replace("?", "_")
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(safe, safe='')}"


async def _serve(request: Request, contract_id: UUID, kind: DocumentKind) -> Response:
    document = await handlers.stored_document(_pool(request), contract_id=contract_id, kind=kind)
    suffix = "-signed" if kind is DocumentKind.SIGNED_COPY else ""
    return Response(
        document.data,
        media_type=document.media_type,
        headers={
            "Content-Disposition": content_disposition(f"{document.contract_number}{suffix}.pdf"),
            "ETag": f'"{document.sha256}"',
            # stored documents never change
            "Cache-Control": "private, max-age=31536000, immutable",
        },
    )


PDF_RESPONSE: Responses = {
    200: {"content": {"application/pdf": {}}, "description": "The PDF, as stored"},
    **NOT_FOUND,
    500: {"model": ProblemDetails, "description": "The stored bytes fail their hash check"},
}


@router.get("/contracts/{contract_id}/document", response_class=Response, responses=PDF_RESPONSE)
async def download_document(request: Request, caller: Reader, contract_id: UUID) -> Response:
    """The contract as drafted, as PDF (named after the contract number)."""
    await _visible(request, caller, contract_id)
    return await _serve(request, contract_id, DocumentKind.DRAFTED)


@router.get("/contracts/{contract_id}/signed-copy", response_class=Response, responses=PDF_RESPONSE)
async def download_signed_copy(request: Request, caller: Reader, contract_id: UUID) -> Response:
    """The signed copy the customer returned, as uploaded."""
    await _visible(request, caller, contract_id)
    return await _serve(request, contract_id, DocumentKind.SIGNED_COPY)


@router.post("/contracts/{contract_id}/send", responses={**NOT_FOUND, **CONFLICT})
async def send_contract(
    request: Request, caller: Sender, contract_id: UUID, pool: DbPool, now: Now
) -> Contract:
    """Record that the drafted contract went to the customer for signature (by the caller)."""
    await _changeable(request, caller, contract_id)
    async with transaction(pool) as conn:
        await handlers.send(conn, contract_id=contract_id, by=caller.audit(), now=now)
    return await _reload(request, contract_id)


@router.post("/contracts/{contract_id}/void", responses={**NOT_FOUND, **CONFLICT})
async def void_contract(
    request: Request,
    caller: Voider,
    contract_id: UUID,
    command: VoidContract,
    pool: DbPool,
    now: Now,
) -> Contract:
    """Void a contract that will not be signed, saying why (by the caller)."""
    await _changeable(request, caller, contract_id, managers_only=True)
    async with transaction(pool) as conn:
        await handlers.void(
            conn, contract_id=contract_id, reason=command.reason, by=caller.audit(), now=now
        )
    return await _reload(request, contract_id)


def _invalid_upload(detail: str) -> Problem:
    return Problem(
        422,
        "Invalid signed copy",
        detail,
        type_="urn:orderflow:problem:invalid-request",
        errors=[FieldProblem(pointer="/file", detail=detail)],
    )


def _too_large(limit: int) -> Problem:
    return Problem(
        413,
        "Signed copy too large",
        f"a signed copy may have at most {limit} bytes",
        type_="urn:orderflow:problem:too-large",
        errors=[FieldProblem(pointer="/file", detail=f"larger than {limit} bytes")],
    )


async def _read_upload(request: Request, limit: int) -> tuple[bytes, str | None]:
    """The `file` part of a multipart request, refused as soon as it exceeds `limit`."""
    declared = request.headers.get("content-length")
    # the multipart envelope adds a little; anything far beyond the limit is refused unread
    if declared and declared.isdigit() and int(declared) > limit + 64 * 1024:
        raise _too_large(limit)
    async with request.form(max_files=1, max_fields=10) as form:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise _invalid_upload(
                "a multipart/form-data part named `file` with the signed PDF is required"
            )
        data = await upload.read(limit + 1)
        if len(data) > limit:
            raise _too_large(limit)
        if not data:
            raise _invalid_upload("the file is empty")
        if not domain.is_pdf(data):
            raise _invalid_upload("the file is not a PDF: its bytes do not start with %PDF-")
        return data, upload.filename


@router.post(
    "/contracts/{contract_id}/signed-copy",
    status_code=201,
    responses={
        **NOT_FOUND,
        **CONFLICT,
        413: {"model": ProblemDetails, "description": "Larger than the configured limit"},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["file"],
                        "properties": {
                            "file": {
                                "type": "string",
                                "format": "binary",
                                "description": "The signed contract as PDF",
                            }
                        },
                    }
                }
            },
        }
    },
)
async def upload_signed_copy(
    request: Request,
    response: Response,
    caller: Sender,
    contract_id: UUID,
    pool: DbPool,
    settings: ServiceSettings,
    now: Now,
) -> Contract:
    """Upload the copy the customer signed: its SHA-256 is recorded and the contract is signed."""
    # checked before the upload is read: a refused caller's bytes are never taken in
    await _changeable(request, caller, contract_id)
    data, file_name = await _read_upload(request, settings.signed_copy_max_bytes)
    async with transaction(pool) as conn:
        await handlers.sign(
            conn,
            contract_id=contract_id,
            signed_copy=data,
            file_name=file_name,
            by=caller.audit(),
            now=now,
        )
    response.headers["Location"] = f"{API}/contracts/{contract_id}/signed-copy"
    return await _reload(request, contract_id)
