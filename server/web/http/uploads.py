"""Receive request bodies under caps: each byte is counted as it arrives.

Multipart uploads stream each file part straight to a temp file. Starlette's
``request.form()`` parses the whole body before the handler runs and has no cap on file
parts; here every chunk is counted as it arrives, so an upload over the cap gets its
413 at once and memory use stays at one chunk. Plain form fields are capped in number
and bytes the same way, and a caller may refuse the request at each file part as it
begins (the upload allowance). JSON bodies (``read_json``) are read up to
MAX_JSON_BODY_KB and no further.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import re
import unicodedata
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header
from starlette.requests import ClientDisconnect, Request

from server.core.errors import ApiError, Problem
from server.core.validation import MAX_INT_DIGITS, is_whole_number, json_body
from server.infra.spool import SpoolFile
from server.infra.storage import Storage
from server.web.state import app_state

# Plain form fields (priority, delay) are tiny: the defaults of MAX_FORM_FIELDS and
# MAX_FORM_FIELDS_KB, which cap how many a request may carry and their bytes in all.
MAX_FORM_FIELDS = 20
MAX_FIELD_BYTES = 64 * 1024
# Multipart framing (boundaries, part headers) on top of the file and field bytes.
_ENVELOPE_BYTES = 64 * 1024
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
MAX_FILENAME_CHARS = 200
HEAD_BYTES = 64
# Received bytes are written (and hashed) off the event loop in batches of about this
# much: a few thread hops per upload instead of one per network chunk, and the memory a
# request holds stays this small however large the file (the aligned buffer of a write
# past the page cache, spool.BUFFER_BYTES, is held only while the batch is written).
FLUSH_BYTES = 1024 * 1024


def display_filename(raw: str) -> str:
    """A display-safe copy of a client filename: base name only, no control characters.

    It is never used as a path; HTML in it is kept as text for clients to escape.
    """
    name = unicodedata.normalize("NFC", raw)
    name = re.split(r"[\\/]", name)[-1]
    name = _CONTROL_CHARS.sub("", name).strip().lstrip(".").strip()
    if len(name) > MAX_FILENAME_CHARS:
        _, dot, ext = name.rpartition(".")
        keep = ext if dot and len(ext) <= 10 else ""
        name = name[: MAX_FILENAME_CHARS - len(keep) - 1] + ("." + keep if keep else "")
    return name or "upload"


@dataclass
class ReceivedFile:
    """One file part, already on disk in the store's temp dir."""

    field: str
    filename: str
    declared_type: str
    path: Path
    size: int = 0
    head: bytes = b""
    sha256: str = ""
    # Set (and the bytes dropped) when the file alone breaks a limit in a batch.
    error: ApiError | None = None
    # While receiving: how to open the temp file, the open file and the running hash,
    # used off the event loop.
    _open: Callable[[Path], SpoolFile] = dataclasses.field(default=SpoolFile, repr=False)
    _out: SpoolFile | None = dataclasses.field(default=None, repr=False)
    _dropped: bool = dataclasses.field(default=False, repr=False)
    _hasher: Any = dataclasses.field(default_factory=hashlib.sha256, repr=False)

    def _write(self, chunks: Sequence[memoryview]) -> None:
        """Append to the temp file and the hash (in a thread: hashlib releases the GIL)."""
        if self._dropped:
            return  # the form was cleaned up (a cancelled request): nothing more is kept
        if self._out is None:
            self._out = self._open(self.path)
        self._out.write(chunks)
        for chunk in chunks:
            self._hasher.update(chunk)

    def _finish(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None
        self.sha256 = self._hasher.hexdigest()


@dataclass
class ReceivedForm:
    files: list[ReceivedFile] = field(default_factory=list)
    fields: dict[str, str] = field(default_factory=dict)

    def single_file(self, name: str) -> ReceivedFile:
        """The one file sent in field ``name``, or a 400."""
        matching = [item for item in self.files if item.field == name]
        if not matching:
            raise ApiError(Problem.INVALID, "missing_file",
                           f"send the image in the multipart field {name!r}")
        return matching[0]

    def cleanup(self) -> None:
        """Remove temp files that were not adopted into the store."""
        for item in self.files:
            item._dropped = True
            if item._out is not None:
                item._out.discard()
                item._out = None
            with contextlib.suppress(FileNotFoundError):
                item.path.unlink()


class _Collector:
    """python-multipart callbacks: route part data to a temp file or a small field buffer."""

    def __init__(self, storage: Storage, form: ReceivedForm, max_files: int,
                 max_file_bytes: int, per_file_errors: bool, max_fields: int,
                 max_field_bytes: int) -> None:
        self.per_file_errors = per_file_errors
        self.storage = storage
        self.form = form
        self.max_files = max_files
        self.max_file_bytes = max_file_bytes
        self.max_fields = max_fields
        self.max_field_bytes = max_field_bytes
        self.fields = 0
        self.field_bytes = 0  # names and values of every field so far
        self.header_field = b""
        self.header_value = b""
        self.headers: dict[bytes, bytes] = {}
        self.current: ReceivedFile | None = None
        self.current_field: str | None = None
        self.field_buf = bytearray()
        self.pending: list[tuple[ReceivedFile, memoryview]] = []
        self.pending_bytes = 0

    # -- callbacks --
    def on_part_begin(self) -> None:
        self.headers = {}
        self.current = None
        self.current_field = None
        self.field_buf = bytearray()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def on_header_end(self) -> None:
        self.headers[self.header_field.lower()] = self.header_value
        self.header_field = b""
        self.header_value = b""

    def on_headers_finished(self) -> None:
        _, params = parse_options_header(self.headers.get(b"content-disposition", b""))
        name = params.get(b"name", b"").decode("utf-8", "replace")
        if b"filename" in params:
            if len(self.form.files) >= self.max_files:
                raise ApiError(Problem.INVALID, "too_many_files",
                               f"at most {self.max_files} file(s) per request")
            raw_name = params[b"filename"].decode("utf-8", "replace")
            declared = self.headers.get(b"content-type", b"").decode("latin-1").strip()
            self.current = ReceivedFile(field=name, filename=display_filename(raw_name),
                                        declared_type=declared, path=self.storage.new_temp(),
                                        _open=self.storage.temp_writer)
            self.form.files.append(self.current)
        else:
            self.fields += 1
            if self.fields > self.max_fields:
                raise ApiError(Problem.INVALID, "too_many_fields",
                               f"at most {self.max_fields} form fields per request")
            self._count_field(len(name.encode()))
            self.current_field = name

    def _count_field(self, size: int) -> None:
        self.field_bytes += size
        if self.field_bytes > self.max_field_bytes:
            raise ApiError(Problem.TOO_LARGE, "fields_too_large",
                           f"the form fields are over {self.max_field_bytes // 1024} KB in all")

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        # A view, not a copy: the bytes go to the file and the hash as they came.
        chunk = memoryview(data)[start:end]
        if self.current is not None:
            item = self.current
            item.size += len(chunk)
            if item.error is not None:
                return
            if item.size > self.max_file_bytes:
                if not self.per_file_errors:
                    raise _too_large(self.max_file_bytes)
                # In a batch one oversize file is that file's error, not the request's.
                self._refuse(item, _too_large(self.max_file_bytes))
                return
            if len(item.head) < HEAD_BYTES:
                item.head += bytes(chunk[: HEAD_BYTES - len(item.head)])
            self.pending.append((item, chunk))
            self.pending_bytes += len(chunk)
        elif self.current_field is not None:
            self._count_field(len(chunk))
            self.field_buf += chunk

    def on_part_end(self) -> None:
        if self.current_field is not None:
            self.form.fields[self.current_field] = self.field_buf.decode("utf-8", "replace")

    def take_pending(self) -> list[tuple[ReceivedFile, memoryview]]:
        pending, self.pending, self.pending_bytes = self.pending, [], 0
        return pending

    def _refuse(self, item: ReceivedFile, error: ApiError) -> None:
        """Drop a file part (``per_file_errors``): what came of it and what comes after."""
        item.error = error
        self.pending = [(f, c) for f, c in self.pending if f is not item]
        self.pending_bytes = sum(len(c) for _, c in self.pending)


def _too_large(limit: int) -> ApiError:
    return ApiError(Problem.TOO_LARGE, "file_too_large",
                    f"upload exceeds the limit of {limit // (1024 * 1024)} MB")


FileCheck = Callable[[ReceivedFile], Awaitable[None]]


async def receive_multipart(request: Request, storage: Storage, *, max_file_bytes: int,
                            max_files: int, per_file_errors: bool = False,
                            max_fields: int = MAX_FORM_FIELDS,
                            max_field_bytes: int = MAX_FIELD_BYTES,
                            max_body_bytes: int | None = None,
                            on_file: FileCheck | None = None) -> ReceivedForm:
    """Stream a multipart body to temp files; 400/413 JSON errors on bad or oversize input.

    Plain fields: at most ``max_fields`` of them and ``max_field_bytes`` in all (names and
    values), refused (400 too_many_fields, 413 fields_too_large) at the part that passes
    the cap, before the rest of the body is read.

    ``on_file`` is awaited for each file part as soon as its headers have arrived, before
    any of its bytes are written; an ApiError it raises refuses the request there, the
    rest of the body unread.

    With ``per_file_errors`` a file over the cap is marked (``ReceivedFile.error``) and
    skipped instead of failing the request.

    ``max_body_bytes`` caps the file bytes of the whole request (MAX_BATCH_MB): past it,
    413 payload_too_large and the rest is not read. By default there is room for
    ``max_files`` files of ``max_file_bytes`` (past that, 413 file_too_large).

    The caller owns the returned form and must call ``cleanup()`` when done.
    """
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or not params.get(b"boundary"):
        raise ApiError(Problem.INVALID, "bad_request",
                       "expected multipart/form-data with a file field")
    files_cap = max_file_bytes * max_files if max_body_bytes is None else max_body_bytes
    body_cap = files_cap + max_field_bytes + _ENVELOPE_BYTES

    def over_cap() -> ApiError:
        if max_body_bytes is None:
            return _too_large(max_file_bytes)
        return ApiError(Problem.TOO_LARGE, "payload_too_large",
                        "the files of one request are over the "
                        f"limit of {max_body_bytes // (1024 * 1024)} MB in all")

    if _declared_over(request, body_cap):
        raise over_cap()

    form = ReceivedForm()
    collector = _Collector(storage, form, max_files, max_file_bytes, per_file_errors,
                           max_fields, max_field_bytes)
    checked = 0  # file parts handed to on_file so far
    parser = MultipartParser(params[b"boundary"], {
        "on_part_begin": collector.on_part_begin,
        "on_part_data": collector.on_part_data,
        "on_part_end": collector.on_part_end,
        "on_header_field": collector.on_header_field,
        "on_header_value": collector.on_header_value,
        "on_header_end": collector.on_header_end,
        "on_headers_finished": collector.on_headers_finished,
    })
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > body_cap:
                raise over_cap()
            parser.write(chunk)
            if on_file is not None:
                while checked < len(form.files):
                    await on_file(form.files[checked])
                    checked += 1
            if collector.pending_bytes >= FLUSH_BYTES:
                await asyncio.to_thread(_write_all, collector.take_pending())
        parser.finalize()
        if parser.state != MultipartState.END:
            # The closing boundary never came: the body was cut short.
            raise ApiError(Problem.INVALID, "bad_request", "the multipart body is incomplete")
        await asyncio.to_thread(_write_all, collector.take_pending(), finish=form.files)
    except MultipartParseError as exc:
        form.cleanup()
        raise ApiError(Problem.INVALID, "bad_request", f"malformed multipart body: {exc}") from None
    except ClientDisconnect:
        form.cleanup()
        raise ApiError(Problem.INVALID, "client_disconnected",
                       "the upload was interrupted") from None
    except BaseException:
        form.cleanup()
        raise
    return form


def _declared_over(request: Request, cap: int) -> bool:
    """Whether the request's Content-Length already says its body is over ``cap``."""
    declared = request.headers.get("content-length", "").strip()
    if not is_whole_number(declared):
        return False  # absent or odd (the server refuses a malformed one): count instead
    return len(declared) > MAX_INT_DIGITS or int(declared) > cap


def payload_too_large(cap: int) -> ApiError:
    """The 413 for a body over ``cap`` bytes."""
    return ApiError(Problem.TOO_LARGE, "payload_too_large",
                    f"the request body is over the limit of {cap // 1024} KB")


async def read_body(request: Request, *, max_bytes: int) -> bytes:
    """The whole body, if it is at most ``max_bytes``: refused from its Content-Length
    before a byte is read, else as soon as the running count passes the cap."""
    if _declared_over(request, max_bytes):
        raise payload_too_large(max_bytes)
    chunks: list[bytes] = []
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > max_bytes:
                raise payload_too_large(max_bytes)
            chunks.append(chunk)
    except ClientDisconnect:
        raise ApiError(Problem.INVALID, "client_disconnected",
                       "the request was interrupted") from None
    return b"".join(chunks)


async def read_json(request: Request, *, empty: Any = None,
                    max_bytes: int | None = None) -> Any:
    """The body as JSON (``empty`` when there is none), read under MAX_JSON_BODY_KB (or
    ``max_bytes``): 413 payload_too_large past it, 400/422 as ``validation.json_body``
    (MAX_JSON_DEPTH, MAX_NUMBER_DIGITS)."""
    settings = app_state(request).settings
    cap = settings.max_json_body_bytes if max_bytes is None else max_bytes
    return json_body(await read_body(request, max_bytes=cap), empty=empty,
                     max_depth=settings.max_json_depth,
                     max_digits=settings.max_number_digits)


def _write_all(pending: list[tuple[ReceivedFile, memoryview]],
               finish: Sequence[ReceivedFile] = ()) -> None:
    """Append buffered chunks to their files (each run of a file's chunks in one call,
    from views of what the network gave); then close and hash the files of ``finish``.
    Runs in a thread: disk and hashing stay off the event loop."""
    current: ReceivedFile | None = None
    run: list[memoryview] = []
    for item, chunk in pending:
        if item is not current and run and current is not None:
            current._write(run)
            run = []
        current = item
        run.append(chunk)
    if run and current is not None:
        current._write(run)
    for item in finish:
        item._finish()
