from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from starlette.requests import Request

from server.core.errors import ApiError, Problem
from server.infra.settings import Settings
from server.infra.spool import ALIGN, DIRECT_MIN_BYTES, SpoolFile
from server.infra.storage import LocalStorage
from server.web.http.error_handlers import status_of
from server.web.http.uploads import (
    FLUSH_BYTES,
    HEAD_BYTES,
    MAX_FILENAME_CHARS,
    ReceivedFile,
    ReceivedForm,
    display_filename,
    read_json,
    receive_multipart,
)


@pytest.mark.parametrize(("raw", "shown"), [
    ("photo.jpg", "photo.jpg"),
    ("../../etc/passwd.jpg", "passwd.jpg"),
    ("..\\..\\windows\\win.ini.jpg", "win.ini.jpg"),
    ("/etc/shadow.jpg", "shadow.jpg"),
    ("....//....//x.jpg", "x.jpg"),
    ("<img src=x onerror=alert(1)>.jpg", "<img src=x onerror=alert(1)>.jpg"),
    ("tab\there\x00.jpg", "tabhere.jpg"),
    ("", "upload"),
    ("../", "upload"),
])
def test_display_filename_is_never_a_path(raw: str, shown: str) -> None:
    assert display_filename(raw) == shown


def test_long_names_are_cut_keeping_the_extension() -> None:
    name = display_filename("é" * 400 + ".jpeg")
    assert len(name) <= MAX_FILENAME_CHARS
    assert name.endswith(".jpeg")


# -- bodies read under caps, as they stream in ----------------------------------------------

BOUNDARY = "darkroomboundary"


class Body:
    """A request body arriving in chunks; counts what the server pulled, and fails the test
    if it pulls more than ``allowed`` (what reading the whole hostile body would take)."""

    def __init__(self, chunks: Iterable[bytes], allowed: int | None = None,
                 settings: Settings | None = None) -> None:
        self.chunks = iter(chunks)
        self.allowed = allowed
        self.pulled = 0
        self.settings = settings or Settings()

    async def receive(self) -> dict[str, Any]:
        chunk = next(self.chunks, None)
        if chunk is None:
            return {"type": "http.request", "body": b"", "more_body": False}
        self.pulled += len(chunk)
        if self.allowed is not None and self.pulled > self.allowed:
            raise AssertionError(f"the server read {self.pulled} bytes of a body it should "
                                 "have refused by now")
        return {"type": "http.request", "body": chunk, "more_body": True}

    def request(self, content_type: str, content_length: int | None = None) -> Request:
        headers = [(b"content-type", content_type.encode())]
        if content_length is not None:
            headers.append((b"content-length", str(content_length).encode()))
        # Only the settings: that is all the upload reader uses of the app state.
        state = SimpleNamespace(settings=self.settings)
        app = SimpleNamespace(state=SimpleNamespace(darkroom=state))
        return Request({"type": "http", "method": "POST", "path": "/", "headers": headers,
                        "app": app}, self.receive)


def _endless(chunk: bytes) -> Iterator[bytes]:
    while True:
        yield chunk


async def test_a_300_mb_json_body_is_refused_from_its_content_length_unread() -> None:
    body = Body(_endless(b" " * 65536), allowed=0)
    with pytest.raises(ApiError) as caught:
        await read_json(body.request("application/json", 300 * 1024 * 1024),
                        max_bytes=256 * 1024)
    assert (status_of(caught.value), caught.value.code) == (413, "payload_too_large")
    assert body.pulled == 0


async def test_a_json_body_without_a_length_is_refused_once_past_the_cap() -> None:
    cap = 256 * 1024
    body = Body(_endless(b"[1," * 20_000), allowed=cap + 60_000)
    with pytest.raises(ApiError) as caught:
        await read_json(body.request("application/json"), max_bytes=cap)
    assert (status_of(caught.value), caught.value.code) == (413, "payload_too_large")
    assert cap < body.pulled <= cap + 60_000


async def test_a_json_body_within_the_cap_is_parsed() -> None:
    body = Body([b'{"type": "t",', b' "payload": {}}'])
    assert await read_json(body.request("application/json", 30), max_bytes=1024) == \
        {"type": "t", "payload": {}}
    assert await read_json(Body([]).request("application/json"), max_bytes=1024,
                           empty={}) == {}


async def test_a_json_body_is_parsed_under_the_depth_and_digit_settings() -> None:
    two_hundred = b'{"n": ' + b"7" * 200 + b"}"
    with pytest.raises(ApiError) as caught:
        await read_json(Body([two_hundred]).request("application/json"))
    assert (status_of(caught.value), caught.value.code) == (422, "number_too_long")
    roomy = Settings(max_number_digits=200, max_json_depth=3)
    assert await read_json(Body([two_hundred], settings=roomy).request("application/json")) \
        == {"n": int("7" * 200)}
    with pytest.raises(ApiError) as caught:
        await read_json(Body([b"[[[[]]]]"], settings=roomy).request("application/json"))
    assert (status_of(caught.value), caught.value.code) == (400, "too_deep")


def _field(name: str, value: bytes) -> bytes:
    return (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n"
            ).encode() + value + b"\r\n"


def _file_head(name: str = "file", filename: str = "a.jpg") -> bytes:
    return (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"; "
            f"filename=\"{filename}\"\r\nContent-Type: image/jpeg\r\n\r\n").encode()


def _end() -> bytes:
    return f"--{BOUNDARY}--\r\n".encode()


MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "files")


async def test_5000_fields_of_60_kb_are_refused_at_the_cap_not_after_the_body(
        storage: LocalStorage) -> None:
    # The batch: 5,000 distinct 60 KB fields, all kept in memory (~300 MB) and a
    # 400 only once the whole body had arrived.
    fields = (_field(f"f{n}", b"v" * 60_000) for n in range(5000))
    body = Body(fields, allowed=2 * 1024 * 1024)
    with pytest.raises(ApiError) as caught:
        await receive_multipart(body.request(MULTIPART), storage, max_file_bytes=1 << 20,
                                max_files=100, per_file_errors=True)
    assert (status_of(caught.value), caught.value.code) == (413, "fields_too_large")
    assert body.pulled < 200_000


async def test_too_many_small_fields_are_refused_at_the_one_past_the_cap(
        storage: LocalStorage) -> None:
    body = Body((_field(f"f{n}", b"1") for n in range(5000)), allowed=100_000)
    with pytest.raises(ApiError) as caught:
        await receive_multipart(body.request(MULTIPART), storage, max_file_bytes=1 << 20,
                                max_files=1, max_fields=20, max_field_bytes=64 * 1024)
    assert (status_of(caught.value), caught.value.code) == (400, "too_many_fields")


async def test_the_fields_we_take_still_pass(storage: LocalStorage) -> None:
    body = Body([_field("priority", b"low"), _field("delay", b"5"), _file_head(), b"data",
                 b"\r\n", _end()])
    form = await receive_multipart(body.request(MULTIPART), storage, max_file_bytes=1 << 20,
                                   max_files=1)
    try:
        assert form.fields == {"priority": "low", "delay": "5"}
        assert form.single_file("file").size == 4
    finally:
        form.cleanup()


async def test_each_file_part_is_checked_as_it_begins(storage: LocalStorage) -> None:
    data = b"\xff" * 65536
    chunks = [_file_head(filename="one.jpg"), *([data] * 4), b"\r\n",
              _file_head(filename="two.jpg"), *([data] * 4), b"\r\n",
              _file_head(filename="three.jpg"), *([data] * 4), b"\r\n", _end()]
    heads = [sum(len(c) for c in chunks[:n + 1]) for n in (0, 6, 12)]
    seen: list[tuple[str, int]] = []

    def checking(body: Body, refuse: str | None) -> Any:
        async def check(part: ReceivedFile) -> None:
            seen.append((part.filename, body.pulled))
            if part.filename == refuse:  # the user's allowance does not cover this one
                raise ApiError(Problem.RATE_LIMITED, "rate_limited", "at most 1 upload per minute")
        return check

    body = Body(chunks)
    form = await receive_multipart(body.request(MULTIPART), storage, max_file_bytes=1 << 20,
                                   max_files=10, per_file_errors=True,
                                   on_file=checking(body, None))
    try:
        # Each was asked about before any of its bytes had been read.
        assert seen == list(zip(["one.jpg", "two.jpg", "three.jpg"], heads, strict=True))
        assert [f.path.stat().st_size for f in form.files] == [4 * 65536] * 3
    finally:
        form.cleanup()

    # Refused at the second file: the request ends there, the rest of the body unread.
    for per_file_errors in (True, False):
        seen.clear()
        body = Body(chunks, allowed=heads[1])
        with pytest.raises(ApiError) as caught:
            await receive_multipart(body.request(MULTIPART), storage, max_file_bytes=1 << 20,
                                    max_files=10, per_file_errors=per_file_errors,
                                    on_file=checking(body, "two.jpg"))
        assert status_of(caught.value) == 429
        assert [name for name, _ in seen] == ["one.jpg", "two.jpg"]
    assert not list(storage.tmp_dir.iterdir()), "the files received so far are removed"


@pytest.mark.parametrize("direct_io", [True, False])
async def test_each_file_is_stored_and_hashed_exactly_as_sent(
        tmp_path: Path, direct_io: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    # Files of odd sizes, over and under the flush batch, in chunks that cut across parts.
    storage = LocalStorage(tmp_path / "files", direct_io=direct_io)
    probe_path = storage.new_temp()
    probe = SpoolFile(probe_path, direct_from=0)
    probe.write([bytes(ALIGN)])
    takes_direct = probe.direct  # whether this volume takes O_DIRECT at all
    probe.discard()
    probe_path.unlink()
    went_direct: list[int] = []
    start_direct = SpoolFile._start_direct

    def spied(writer: SpoolFile) -> bool:
        went = start_direct(writer)
        if went:
            went_direct.append(writer._written)
        return went

    monkeypatch.setattr(SpoolFile, "_start_direct", spied)
    rng = random.Random(7)
    contents = [rng.randbytes(n) for n in (0, 1, 4097, FLUSH_BYTES + 4095, 2 * FLUSH_BYTES + 3)]
    body = b"".join(_file_head(filename=f"{n}.jpg") + data + b"\r\n"
                    for n, data in enumerate(contents)) + _end()
    cuts = sorted(rng.sample(range(1, len(body)), 60))
    chunks = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    form = await receive_multipart(Body(chunks).request(MULTIPART), storage,
                                   max_file_bytes=4 * FLUSH_BYTES, max_files=10)
    try:
        assert [f.path.read_bytes() for f in form.files] == contents
        assert [f.size for f in form.files] == [len(c) for c in contents]
        assert [f.sha256 for f in form.files] == [hashlib.sha256(c).hexdigest()
                                                  for c in contents]
        assert [f.head for f in form.files] == [c[:HEAD_BYTES] for c in contents]
    finally:
        form.cleanup()
    assert not list(storage.tmp_dir.iterdir())
    # The two files over DIRECT_MIN_BYTES went past the cache, wherever they began in
    # a batch, when asked to and the volume takes it; the others never.
    assert len(went_direct) == (2 if direct_io and takes_direct else 0)
    assert all(written < DIRECT_MIN_BYTES for written in went_direct)


def test_a_cleaned_up_form_takes_no_more_bytes(storage: LocalStorage) -> None:
    # A cancelled request's cleanup runs while its writing thread may still go on.
    storage.ensure_dirs()
    item = ReceivedFile(field="file", filename="a.jpg", declared_type="image/jpeg",
                        path=storage.new_temp(), _open=storage.temp_writer)
    item._write([memoryview(b"first")])
    ReceivedForm(files=[item]).cleanup()
    item._write([memoryview(b"late")])
    assert item._out is None and not item.path.exists()


async def test_a_batch_over_its_byte_cap_is_refused_before_the_rest_is_read(
        storage: LocalStorage) -> None:
    # The batch body cap was MAX_UPLOAD_MB times the files (about 5 GB), with no setting.
    cap = 1 << 20  # MAX_BATCH_MB=1
    data = b"\xff" * 65536
    declared = Body(_endless(data), allowed=0)
    with pytest.raises(ApiError) as caught:
        await receive_multipart(declared.request(MULTIPART, 10 * cap), storage,
                                max_file_bytes=cap, max_files=100, per_file_errors=True,
                                max_body_bytes=cap)
    assert (status_of(caught.value), caught.value.code) == (413, "payload_too_large")
    assert "1 MB in all" in caught.value.message
    # Without a Content-Length: at the chunk that passes it, files each under their own cap.
    files = (part for n in range(100) for part in (_file_head(filename=f"{n}.jpg"),
                                                   *([data] * 4), b"\r\n"))
    streamed = Body(files, allowed=cap + 256 * 1024)
    with pytest.raises(ApiError) as caught:
        await receive_multipart(streamed.request(MULTIPART), storage, max_file_bytes=cap,
                                max_files=100, per_file_errors=True, max_body_bytes=cap)
    assert (status_of(caught.value), caught.value.code) == (413, "payload_too_large")
    assert not list(storage.tmp_dir.iterdir())
    # By default: room for max_files files of max_file_bytes.
    default = Body(_endless(data), allowed=0)
    with pytest.raises(ApiError) as caught:
        await receive_multipart(default.request(MULTIPART, 3 * cap), storage,
                                max_file_bytes=cap, max_files=2)
    assert (status_of(caught.value), caught.value.code) == (413, "file_too_large")


def test_the_batch_caps_are_settings(tmp_path: Path) -> None:
    env = {"DATA_DIR": str(tmp_path)}
    assert Settings.from_env(env).max_batch_files == 100
    assert Settings.from_env(env).max_batch_bytes == 50 * 100 * 1024 * 1024
    assert Settings.from_env({**env, "MAX_UPLOAD_MB": "10", "MAX_BATCH_FILES": "20"}
                             ).max_batch_bytes == 200 * 1024 * 1024
    assert Settings.from_env({**env, "MAX_BATCH_MB": "300"}).max_batch_bytes == 300 << 20
