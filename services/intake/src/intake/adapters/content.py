"""What an uploaded file is, learnt from its bytes as they stream in: size (with a limit),
SHA-256, the first bytes for `filetype`, whether it is UTF-8 text. Spooled in memory up to
1 MiB, then in an anonymous temporary file that vanishes when closed or when the process
dies, so a refused upload leaves nothing anywhere."""

from __future__ import annotations

import codecs
import hashlib
import re
import tempfile
import zipfile
from collections.abc import Iterator

import filetype  # type: ignore[import-untyped]

from ..domain import DOCX, XLSX

HEAD_BYTES = 8192
SPOOL_BYTES = 1 << 20

# C0 controls other than tab, line feed, form feed and carriage return, and DEL: a file
# holding them is binary, even when its bytes happen to be valid UTF-8
_BINARY = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")
_DXF_TEXT = re.compile(rb"^\s*0\s*\r?\n\s*SECTION\s*\r?\n", re.ASCII)
_DXF_BINARY = b"AutoCAD Binary DXF\r\n\x1a\x00"


class TooLarge(Exception):
    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"the file is larger than the limit of {limit} bytes")


class IncomingFile:
    """One uploaded file while it arrives. `write()` raises TooLarge as soon as the limit is
    passed, so the rest of the upload is never read."""

    def __init__(self, *, limit: int) -> None:
        self.limit = limit
        self.size = 0
        self._sha = hashlib.sha256()
        self._head = bytearray()
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._text = True
        self._file = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115

    def write(self, chunk: bytes) -> None:
        if not chunk:
            return
        self.size += len(chunk)
        if self.size > self.limit:
            raise TooLarge(self.limit)
        self._sha.update(chunk)
        if len(self._head) < HEAD_BYTES:
            self._head += chunk[: HEAD_BYTES - len(self._head)]
        if self._text:
            try:
                if _BINARY.search(self._decoder.decode(chunk)):
                    self._text = False
            except UnicodeDecodeError:
                self._text = False
        self._file.write(chunk)

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()

    def _is_text(self) -> bool:
        if not self._text:
            return False
        try:
            self._decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            return False
        return True

    def detect(self) -> str | None:
        """The content type the bytes show; `text/plain` for UTF-8 text, None when unknown."""
        head = bytes(self._head)
        guess = filetype.guess(head)
        mime: str | None = str(guess.mime) if guess is not None else None
        if mime == "application/zip" or (mime is None and head.startswith(b"PK\x03\x04")):
            # an office file whose identifying entries are not among the first bytes
            return self._office_type() or mime
        if mime is not None:
            return mime
        if head.startswith(_DXF_BINARY):
            return "image/vnd.dxf"
        if self._is_text():
            return "image/vnd.dxf" if _DXF_TEXT.match(head) else "text/plain"
        return None

    def _office_type(self) -> str | None:
        self._file.seek(0)
        try:
            with zipfile.ZipFile(self._file) as archive:  # type: ignore[arg-type]
                names = set(archive.namelist())
        except (zipfile.BadZipFile, OSError, EOFError):
            return None
        if "word/document.xml" in names:
            return DOCX
        if "xl/workbook.xml" in names:
            return XLSX
        return None

    def chunks(self, size: int) -> Iterator[bytes]:
        self._file.seek(0)
        while block := self._file.read(size):
            yield block

    def close(self) -> None:
        self._file.close()
