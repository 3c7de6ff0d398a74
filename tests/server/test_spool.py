"""SpoolFile: what it writes is what it was given, past the page cache where it can be."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import mmap
import os
import random
from pathlib import Path

import pytest

from server.infra import spool
from server.infra.spool import ALIGN, DIRECT_MIN_BYTES, SpoolFile
from server.infra.storage import LocalStorage

SIZES = [0, 1, ALIGN - 1, ALIGN, ALIGN + 1, 3 * ALIGN, 64 * 1024 - 7, 300_001]


def _chunks(data: bytes, seed: int) -> list[bytes]:
    """``data`` cut at random points, as a network hands it over."""
    rng, out, at = random.Random(seed), [], 0
    while at < len(data):
        step = rng.choice([1, 17, ALIGN - 1, ALIGN, 9000, 65536, 200_000])
        out.append(data[at:at + step])
        at += step
    return out


def _spooled(path: Path, data: bytes, *, direct: bool, buffer_bytes: int = 8 * ALIGN,
             calls: int = 3) -> SpoolFile:
    path.touch()
    # direct_from=0: direct from the first byte, as a large upload is, at these small sizes.
    writer = SpoolFile(path, direct=direct, buffer_bytes=buffer_bytes, direct_from=0)
    pieces = _chunks(data, len(data))
    for n in range(calls):  # several calls, as batches of a request come
        writer.write([memoryview(c) for c in
                      pieces[len(pieces) * n // calls:len(pieces) * (n + 1) // calls]])
    writer.close()
    return writer


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("direct", [True, False])
def test_the_file_holds_exactly_the_bytes_written(tmp_path: Path, size: int,
                                                  direct: bool) -> None:
    data = random.Random(size).randbytes(size)
    _spooled(tmp_path / "f", data, direct=direct)
    assert (tmp_path / "f").read_bytes() == data


def _takes_o_direct(folder: Path) -> bool:
    probe = folder / "probe"
    probe.touch()
    try:
        os.close(os.open(probe, os.O_WRONLY | spool._O_DIRECT))
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
        return False
    finally:
        probe.unlink()
    return True


def test_a_large_file_is_written_past_the_page_cache_a_small_one_through_it(
        tmp_path: Path) -> None:
    if not _takes_o_direct(tmp_path):
        pytest.skip(f"{tmp_path} does not take O_DIRECT")
    for name, first, direct in (("large", DIRECT_MIN_BYTES, True),
                                ("small", DIRECT_MIN_BYTES - 1, False)):
        path = tmp_path / name
        path.touch()
        writer = SpoolFile(path)
        data = random.Random(first).randbytes(first + ALIGN + 5)
        writer.write([data[:first]])
        assert writer.direct is direct, name
        assert bool(fcntl.fcntl(writer._fd, fcntl.F_GETFL) & spool._O_DIRECT) is direct, name
        writer.write([data[first:]])  # later writes keep the first one's way
        assert writer.direct is direct, name
        writer.close()
        assert path.read_bytes() == data, name


def test_a_volume_that_refuses_o_direct_is_written_plainly(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_fcntl = fcntl.fcntl

    def no_direct(fd: int, command: int, arg: int = 0) -> int:
        if command == fcntl.F_SETFL and arg & spool._O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_fcntl(fd, command, arg)

    monkeypatch.setattr(fcntl, "fcntl", no_direct)
    data = random.Random(1).randbytes(100_000)
    writer = _spooled(tmp_path / "f", data, direct=True)
    assert not writer.direct
    assert (tmp_path / "f").read_bytes() == data


def test_a_volume_that_refuses_an_aligned_write_gets_the_rest_plainly_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = os.write
    refused: list[int] = []

    def refuse_direct(fd: int, data: bytes | memoryview) -> int:
        if fcntl.fcntl(fd, fcntl.F_GETFL) & spool._O_DIRECT:
            refused.append(len(data))
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", refuse_direct)
    data = random.Random(2).randbytes(200_000)
    writer = _spooled(tmp_path / "f", data, direct=True)
    assert not writer.direct
    assert len(refused) == 1, "the direct write was never tried, or tried again"
    assert (tmp_path / "f").read_bytes() == data


def test_a_partial_direct_write_goes_on_from_where_it_stopped(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = os.write

    def one_block_at_a_time(fd: int, data: bytes | memoryview) -> int:
        return real_write(fd, memoryview(data)[:ALIGN])

    monkeypatch.setattr(os, "write", one_block_at_a_time)
    data = random.Random(3).randbytes(50_000)
    _spooled(tmp_path / "f", data, direct=True)
    assert (tmp_path / "f").read_bytes() == data


def test_a_discarded_file_gets_nothing_more_and_is_closed(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.touch()
    writer = SpoolFile(path, buffer_bytes=4 * ALIGN, direct_from=0)
    writer.write([b"a" * (5 * ALIGN + 3)])
    fd = writer._fd
    writer.discard()
    # What filled the buffer once was written; the partial rest never is.
    assert path.stat().st_size == 4 * ALIGN
    with pytest.raises(OSError):
        os.fstat(fd)
    writer.close()  # closing after a discard is harmless


@pytest.mark.parametrize("direct", [True, False])
def test_local_storage_hands_out_writers_as_configured(tmp_path: Path, direct: bool) -> None:
    storage = LocalStorage(tmp_path / "files", direct_io=direct)
    storage.ensure_dirs()
    temp = storage.new_temp()
    writer = storage.temp_writer(temp)
    try:
        writer.write([bytes(DIRECT_MIN_BYTES)])
        assert writer.direct == (direct and _takes_o_direct(tmp_path))
    finally:
        writer.close()


def test_buffers_are_reused_and_only_a_few_kept() -> None:
    pool = spool._Buffers(ALIGN, keep=2)
    taken = [pool.take() for _ in range(3)]
    for buffer in taken:
        pool.give(buffer)
    assert taken[2].closed, "more than `keep` free buffers are unmapped"
    again = {id(pool.take()), id(pool.take())}
    assert again == {id(taken[0]), id(taken[1])}
    assert all(not b.closed for b in taken[:2])


def _resident_pages(path: Path) -> int:
    """How many of the file's pages are in the page cache (mincore of a mapping of it)."""
    libc = ctypes.CDLL(None, use_errno=True)
    size = path.stat().st_size
    pages = -(-size // mmap.PAGESIZE)
    with path.open("rb") as fh, mmap.mmap(fh.fileno(), size, access=mmap.ACCESS_COPY) as mm:
        address = ctypes.addressof(ctypes.c_char.from_buffer(mm))
        vector = (ctypes.c_ubyte * pages)()
        if libc.mincore(ctypes.c_void_p(address), ctypes.c_size_t(size), vector) != 0:
            raise OSError(ctypes.get_errno(), "mincore")
        return sum(v & 1 for v in vector)


def test_an_original_read_for_its_renditions_leaves_the_page_cache(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "files")
    storage.ensure_dirs()
    temp = storage.new_temp()
    temp.write_bytes(os.urandom(64 * ALIGN))
    with temp.open("rb+") as fh:
        os.fsync(fh.fileno())  # clean pages, as an O_DIRECT upload's are once read
    original = storage.adopt_original(temp, "img_1")
    original.read_bytes()
    assert _resident_pages(original) == 64
    storage.uncache_original("img_1")
    assert _resident_pages(original) == 0
    storage.uncache_original("img_gone")  # a missing file is fine
