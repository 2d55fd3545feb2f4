"""Files: what may be uploaded, and under which name."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from uuid import UUID

from orderflow.messages import (
    Problem,
)

from .selfcheck import problem_at
from .statuses import RuleViolation


@dataclass(frozen=True)
class FileType:
    content_type: str
    label: str
    extensions: tuple[str, ...]
    #: other content types a client may declare for the same bytes
    aliases: frozenset[str] = field(default_factory=frozenset)


_TEXT_ALIASES = frozenset(
    {
        "text/plain",
        "text/csv",
        "application/csv",
        "text/x-csv",
        "text/comma-separated-values",
        "text/tab-separated-values",
        "text/markdown",
        "text/x-markdown",
        "message/rfc822",
    }
)
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"

ALLOWED_FILES: tuple[FileType, ...] = (
    FileType("application/pdf", "PDF", (".pdf",), frozenset({"application/x-pdf"})),
    FileType("image/png", "PNG", (".png",)),
    FileType("image/jpeg", "JPEG", (".jpg", ".jpeg"), frozenset({"image/jpg", "image/pjpeg"})),
    FileType("image/tiff", "TIFF", (".tif", ".tiff"), frozenset({"image/tif"})),
    FileType(DOCX, "Word document (DOCX)", (".docx",)),
    FileType(XLSX, "Excel workbook (XLSX)", (".xlsx",)),
    FileType(
        "image/vnd.dwg",
        "AutoCAD drawing (DWG)",
        (".dwg",),
        frozenset({"application/acad", "application/x-acad", "application/dwg", "image/x-dwg"}),
    ),
    FileType(
        "image/vnd.dxf",
        "drawing exchange file (DXF)",
        (".dxf",),
        frozenset({"application/dxf", "application/x-dxf", "image/x-dxf", "text/plain"}),
    ),
    FileType(
        "text/csv",
        "CSV text",
        (".csv", ".tsv"),
        _TEXT_ALIASES | {"application/vnd.ms-excel"},
    ),
    FileType(
        "text/plain", "plain text (UTF-8)", (".txt", ".text", ".log", ".md", ".eml"), _TEXT_ALIASES
    ),
)
_BY_TYPE = {t.content_type: t for t in ALLOWED_FILES}
_BY_EXTENSION = {ext: t for t in ALLOWED_FILES for ext in t.extensions}
ALLOWED_LABELS = ", ".join(t.label for t in ALLOWED_FILES)

#: Declared types that say nothing about the bytes: the bytes decide.
_UNDECLARED = frozenset(
    {"", "application/octet-stream", "binary/octet-stream", "application/unknown"}
)

#: Names a file must never be saved or opened under, whatever its bytes: a PDF called
#: `invoice.exe` is a trap for whoever downloads it.
_EXECUTABLE = frozenset(
    """.exe .dll .com .bat .cmd .scr .msi .msp .ps1 .psm1 .vbs .vbe .js .jse .mjs .wsf .wsh
    .hta .jar .sh .bash .app .apk .lnk .reg .cpl .html .htm .xhtml .svg .php .py""".split()  # noqa: SIM905
)

_WINDOWS_DEVICES = frozenset(
    ["CON", "PRN", "AUX", "NUL"] + [f"{d}{n}" for d in ("COM", "LPT") for n in range(1, 10)]
)
_NOT_IN_NAMES = re.compile(r'[<>:"|?*]')
MAX_NAME_CHARS = 200
MAX_NAME_BYTES = 255


def _extension(name: str) -> str:
    suffix = PurePosixPath(name).suffix.lower()
    return suffix if 1 < len(suffix) <= 16 else ""


def sanitise_filename(raw: str | None) -> str:
    """A file name safe to show and to offer as a download name: the last path segment
    only, without control or invisible formatting characters (a right-to-left override can
    disguise `exe` as `pdf`), characters Windows refuses, leading dots or `..`, or a
    Windows device name; at most 200 characters and 255 UTF-8 bytes, the extension kept.
    Any script stays as it is: `技术图纸 v2.pdf` is a fine name. May return ''."""
    name = unicodedata.normalize("NFC", raw or "")
    name = re.split(r"[/\\]", name)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch) not in {"Cc", "Cf", "Cs", "Co"})
    name = _NOT_IN_NAMES.sub("_", name)
    name = " ".join(name.split())
    name = re.sub(r"\.{2,}", ".", name).strip(" .")
    if not name:
        return ""
    ext = name[len(name) - len(_extension(name)) :] if _extension(name) else ""
    stem = name[: len(name) - len(ext)]
    if stem.split(".")[0].upper() in _WINDOWS_DEVICES:
        stem = f"_{stem}"
    room_chars = MAX_NAME_CHARS - len(ext)
    room_bytes = MAX_NAME_BYTES - len(ext.encode())
    stem = stem[:room_chars]
    while len(stem.encode()) > room_bytes:
        stem = stem[:-1]
    return (stem.rstrip(" .") or "attachment") + ext


class FileRefused(RuleViolation):
    """An upload that is not stored: `status` is 415 for a kind of file not accepted, 422
    for a file whose declared type or name disagrees with its bytes."""

    def __init__(self, status: int, problems: list[Problem]) -> None:
        self.status = status
        self.problems = problems
        super().__init__("; ".join(p.detail for p in problems))


def _base_type(declared: str | None) -> str:
    return (declared or "").split(";")[0].strip().lower()


def _describe(content_type: str | None) -> str:
    known = _BY_TYPE.get(content_type or "")
    if known is not None:
        return known.label
    return content_type or "not a recognised kind of file"


@dataclass(frozen=True)
class AcceptedFile:
    content_type: str
    name: str


def accept_file(
    *, detected: str | None, declared: str | None, filename: str | None
) -> AcceptedFile:
    """The content type a file is stored and served with, decided by its bytes (`detected`,
    `text/plain` for UTF-8 text), and its sanitised name. Raises FileRefused when the bytes
    are not an accepted kind of file, or when the declared type or the name's extension
    says something else than the bytes."""
    name = sanitise_filename(filename)
    ext = _extension(name)
    claimed = _base_type(declared)
    if detected == "text/plain" and (
        ext in (".csv", ".tsv") or claimed in ("text/csv", "application/csv", "text/x-csv")
    ):
        detected = "text/csv"
    kind = _BY_TYPE.get(detected or "")
    if kind is None:
        raise FileRefused(
            415,
            [
                problem_at(
                    "/file",
                    f"the file's content is {_describe(detected)}, which is not accepted; "
                    f"accepted are {ALLOWED_LABELS}",
                )
            ],
        )
    problems = []
    if claimed not in _UNDECLARED and claimed != kind.content_type and claimed not in kind.aliases:
        problems.append(
            problem_at(
                "/file",
                f"the file was sent as {claimed} but its content is {kind.label} "
                f"({kind.content_type}); send it with its real type",
            )
        )
    if ext in _EXECUTABLE:
        raise FileRefused(
            415, [problem_at("/file", f"files named *{ext} are not accepted, whatever they hold")]
        )
    named = _BY_EXTENSION.get(ext)
    text_names = kind.content_type in ("text/plain", "text/csv") and named in (
        _BY_TYPE["text/plain"],
        _BY_TYPE["text/csv"],
    )
    if ext and named is not None and named is not kind and not text_names:
        problems.append(
            problem_at(
                "/file",
                f"the file is named *{ext} ({named.label}) but its content is {kind.label}; "
                "rename it to what it is",
            )
        )
    if problems:
        raise FileRefused(422, problems)
    if not name:
        name = "attachment"
    if not ext:
        name += kind.extensions[0]
    return AcceptedFile(content_type=kind.content_type, name=name)


def download_path(order_id: UUID, attachment_id: UUID) -> str:
    """Where intake's HTTP API serves an attachment; events carry it, never the bytes."""
    return f"/api/v1/orders/{order_id}/attachments/{attachment_id}"
