"""The files an `order.submit` command names by URL (decision 0024): fetched before the
command's transaction (no connection is held while a server answers), checked as an HTTP
upload is (size limit, kind of file read from the bytes, name and declared type), then
handed to the handler, which stores them with the revision in the inbox transaction.

A file that can never be fetched or accepted refuses the command (`PermanentError`, each
problem at `/attachments/<n>/...`); one that cannot be fetched now raises the fetch's
`ConnectionError`, and the consumer retries the whole command."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from pydantic import TypeAdapter, ValidationError

from orderflow import refusals
from orderflow.consumer import PermanentError
from orderflow.messages import AttachmentUrl, Problem
from orderflow.outbound import OutboundPolicy

from .. import domain, handlers
from ..adapters import fetch
from ..adapters.blobs import CHUNK_BYTES
from ..adapters.content import IncomingFile, TooLarge

_REFERENCES: TypeAdapter[list[AttachmentUrl]] = TypeAdapter(list[AttachmentUrl])


def references(body: Any) -> list[AttachmentUrl]:
    """The files the body names, when `attachments` is well formed; none otherwise (the
    command's parsing then reports what is wrong with it, with the rest of the document)."""
    if not isinstance(body, dict) or "attachments" not in body:
        return []
    try:
        return _REFERENCES.validate_python(body["attachments"])
    except ValidationError:
        return []


def _refusal_pointer(n: int, detail: str) -> str:
    # accept_file's details say which part disagrees with the bytes
    if detail.startswith("the file was sent as"):
        return f"/attachments/{n}/media_type"
    if detail.startswith(("the file is named", "files named")):
        return f"/attachments/{n}/filename"
    return f"/attachments/{n}/url"


def _accepted(
    n: int, ref: AttachmentUrl, incoming: IncomingFile
) -> tuple[handlers.NewFile | None, list[Problem]]:
    url = f"/attachments/{n}/url"
    if incoming.size == 0:
        return None, [Problem(pointer=url, detail="the file is empty")]
    if ref.sha256 is not None and ref.sha256 != incoming.sha256:
        detail = f"the file's SHA-256 is {incoming.sha256}, not the {ref.sha256} the command gave"
        return None, [Problem(pointer=f"/attachments/{n}/sha256", detail=detail)]
    try:
        accepted = domain.accept_file(
            detected=incoming.detect(), declared=ref.media_type, filename=ref.filename
        )
    except domain.FileRefused as exc:
        return None, [
            Problem(pointer=_refusal_pointer(n, p.detail), detail=p.detail) for p in exc.problems
        ]
    return (
        handlers.NewFile(
            kind=ref.kind,
            name=accepted.name,
            content_type=accepted.content_type,
            size=incoming.size,
            sha256=incoming.sha256,
            chunks=lambda: incoming.chunks(CHUNK_BYTES),
            attachment_id=ref.id or uuid.uuid4(),
        ),
        [],
    )


def _repeated_ids(refs: Sequence[AttachmentUrl]) -> list[Problem]:
    seen: set[uuid.UUID] = set()
    problems = []
    for n, ref in enumerate(refs):
        if ref.id is None:
            continue
        if ref.id in seen:
            problems.append(
                Problem(pointer=f"/attachments/{n}/id", detail=f"{ref.id} names another file too")
            )
        seen.add(ref.id)
    return problems


@asynccontextmanager
async def fetched(
    refs: Sequence[AttachmentUrl], *, policy: OutboundPolicy, limit: int, timeout: float
) -> AsyncIterator[list[handlers.NewFile]]:
    """Every file fetched and accepted, in the command's order, spooled until the block
    ends; PermanentError with every file's problem, or FetchUnavailable."""
    spooled: list[IncomingFile] = []
    try:
        files: list[handlers.NewFile] = []
        problems = _repeated_ids(refs)
        if refs:
            async with fetch.client(policy, timeout=timeout) as http:
                for n, ref in enumerate(refs):
                    incoming = IncomingFile(limit=limit)
                    spooled.append(incoming)
                    try:
                        await fetch.download(http, ref.url, incoming)
                    except fetch.FetchRefused as exc:
                        problems.append(Problem(pointer=f"/attachments/{n}/url", detail=str(exc)))
                        continue
                    except TooLarge:
                        detail = (
                            f"the file is larger than {limit} bytes "
                            f"({limit / 1024 / 1024:g} MiB), the most a file may have"
                        )
                        problems.append(Problem(pointer=f"/attachments/{n}/url", detail=detail))
                        continue
                    new_file, refused = _accepted(n, ref, incoming)
                    problems += refused
                    if new_file is not None:
                        files.append(new_file)
        if problems:
            raise PermanentError(
                f"{len(problems)} file(s) named by URL not accepted",
                problems=problems,
                code=refusals.FILE_REFUSED,
            )
        yield files
    finally:
        for incoming in spooled:
            incoming.close()
