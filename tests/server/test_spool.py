"""SpoolFile: what it writes is what it was given, past the page cache once it is large."""

from __future__ import annotations

import array
import ctypes
import errno
import fcntl
import gc
import itertools
import mmap
import os
import random
from pathlib import Path

import pytest

from server.infra import spool
from server.infra.settings import Settings
from server.infra.spool import ALIGN, DIRECT_MIN_BYTES, SpoolFile, filesystem_type
from server.infra.storage import LocalStorage, storage_for

SIZES = [0, 1, ALIGN - 1, ALIGN, ALIGN + 1, 3 * ALIGN, 64 * 1024 - 7, 300_001]


def _takes_o_direct(folder: Path) -> bool:
    if not spool._O_DIRECT:
        return False
    probe = folder / "probe"
    probe.touch()
    try:
        os.close(os.open(probe, os.O_WRONLY | spool._O_DIRECT))
    except OSError as exc:
        if exc.errno not in spool._REFUSALS:
            raise
        return False
    finally:
        probe.unlink()
    return True


@pytest.fixture
def direct_dir(tmp_path: Path) -> Path:
    """A folder on a volume that takes O_DIRECT (the test is skipped elsewhere)."""
    if not _takes_o_direct(tmp_path):
        pytest.skip(f"{tmp_path} does not take O_DIRECT")
    return tmp_path


def _chunks(data: bytes, seed: int) -> list[bytes]:
    """``data`` cut at random points, as a network hands it over."""
    rng, out, at = random.Random(seed), [], 0
    while at < len(data):
        step = rng.choice([1, 17, ALIGN - 1, ALIGN, 9000, 65536, 200_000])
        out.append(data[at:at + step])
        at += step
    return out


def _spooled(path: Path, data: bytes, *, direct: bool, direct_from: int = 0,
             calls: int = 3) -> bool:
    """Write ``data`` in ``calls`` calls (direct from the first byte by default, as a large
    upload is, at these small sizes) and close; whether it was going direct before the
    close."""
    path.touch()
    writer = SpoolFile(path, direct=direct, buffer_bytes=8 * ALIGN, direct_from=direct_from)
    pieces = _chunks(data, len(data))
    for n in range(calls):  # several calls, as batches of a request come
        writer.write([memoryview(c) for c in
                      pieces[len(pieces) * n // calls:len(pieces) * (n + 1) // calls]])
        assert len(writer._tail) < ALIGN, "no more than a partial block is held between calls"
    went_direct = writer.direct
    writer.close()
    return went_direct


@pytest.mark.parametrize("size", SIZES)
def test_the_file_holds_exactly_the_bytes_written(tmp_path: Path, size: int) -> None:
    data = random.Random(size).randbytes(size)
    assert not _spooled(tmp_path / "plain", data, direct=False)
    assert (tmp_path / "plain").read_bytes() == data


@pytest.mark.parametrize("size", SIZES)
def test_the_file_holds_exactly_the_bytes_written_past_the_cache(direct_dir: Path,
                                                                 size: int) -> None:
    data = random.Random(size).randbytes(size)
    assert _spooled(direct_dir / "direct", data, direct=True)
    assert (direct_dir / "direct").read_bytes() == data


def test_a_file_goes_past_the_cache_once_it_is_large(direct_dir: Path) -> None:
    # The first writes go through the cache; the one that takes the file past
    # DIRECT_MIN_BYTES writes the partial block again, whole, and goes on past it.
    data = random.Random(5).randbytes(DIRECT_MIN_BYTES + 3 * ALIGN + 11)
    path = direct_dir / "f"
    path.touch()
    writer = SpoolFile(path)
    cuts = [0, 100_001, DIRECT_MIN_BYTES - 5, DIRECT_MIN_BYTES + 7, len(data)]
    ways = []
    for start, end in itertools.pairwise(cuts):
        writer.write([data[start:end]])
        ways.append(bool(fcntl.fcntl(writer._fd, fcntl.F_GETFL) & spool._O_DIRECT))
    assert ways == [False, False, True, True]
    writer.close()
    assert path.read_bytes() == data


def test_a_small_file_stays_in_the_cache(direct_dir: Path) -> None:
    data = random.Random(6).randbytes(DIRECT_MIN_BYTES - 1)
    assert not _spooled(direct_dir / "f", data, direct=True, direct_from=DIRECT_MIN_BYTES)
    assert (direct_dir / "f").read_bytes() == data


@pytest.mark.parametrize("refusal", [errno.EINVAL, errno.EOPNOTSUPP])
def test_a_volume_that_refuses_o_direct_is_written_plainly(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, refusal: int) -> None:
    real_fcntl = fcntl.fcntl
    tried: list[int] = []

    def no_direct(fd: int, command: int, arg: int = 0) -> int:
        if command == fcntl.F_SETFL and arg & spool._O_DIRECT:
            tried.append(fd)
            raise OSError(refusal, os.strerror(refusal))
        return real_fcntl(fd, command, arg)

    monkeypatch.setattr(fcntl, "fcntl", no_direct)
    monkeypatch.setattr(spool, "_O_DIRECT", spool._O_DIRECT or 0o40000)
    data = random.Random(1).randbytes(100_000)
    assert not _spooled(tmp_path / "f", data, direct=True)
    assert len(tried) == 1, "asked once, then not again for the same file"
    assert (tmp_path / "f").read_bytes() == data


def test_a_volume_that_refuses_an_aligned_write_gets_the_rest_plainly_once(
        direct_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = os.write
    refused: list[int] = []

    def refuse_direct(fd: int, data: bytes | memoryview) -> int:
        if fcntl.fcntl(fd, fcntl.F_GETFL) & spool._O_DIRECT:
            refused.append(len(data))
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", refuse_direct)
    data = random.Random(2).randbytes(200_000)
    # Five calls: after the refusal, the held partial block and later calls go plainly.
    _spooled(direct_dir / "f", data, direct=True, calls=5)
    assert len(refused) == 1, "the direct write was never tried, or tried again"
    assert (direct_dir / "f").read_bytes() == data


def test_a_partial_direct_write_goes_on_from_where_it_stopped(
        direct_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = os.write

    def one_block_at_a_time(fd: int, data: bytes | memoryview) -> int:
        return real_write(fd, memoryview(data)[:ALIGN])

    monkeypatch.setattr(os, "write", one_block_at_a_time)
    data = random.Random(3).randbytes(50_000)
    assert _spooled(direct_dir / "f", data, direct=True)
    assert (direct_dir / "f").read_bytes() == data


def test_a_discarded_file_gets_nothing_more_and_is_closed(direct_dir: Path) -> None:
    path = direct_dir / "f"
    path.touch()
    writer = SpoolFile(path, buffer_bytes=4 * ALIGN, direct_from=0)
    writer.write([b"a" * (5 * ALIGN + 3)])
    fd = writer._fd
    writer.discard()
    # The whole blocks were written; the partial one held never is.
    assert path.stat().st_size == 5 * ALIGN
    with pytest.raises(OSError):
        os.fstat(fd)
    with pytest.raises(ValueError):
        writer.write([b"late"])  # a thread still writing after the request went
    writer.close()  # closing after a discard is harmless


def test_a_failing_close_is_not_repeated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "f"
    path.touch()
    writer = SpoolFile(path, direct=False)
    writer.write([b"x"])
    real_close = os.close
    closed: list[int] = []

    def failing_close(fd: int) -> None:
        closed.append(fd)
        real_close(fd)
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "close", failing_close)
    with pytest.raises(OSError):
        writer.close()
    writer.discard()  # as the form's cleanup does after a failed close
    assert len(closed) == 1, "the descriptor is closed once, not again under a new owner"


def test_after_a_failed_write_the_file_is_only_discarded(
        direct_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = direct_dir / "f"
    path.touch()
    writer = SpoolFile(path, direct_from=0)
    writer.write([b"a" * (ALIGN + 100)])
    real_write = os.write

    def disk_full(fd: int, data: bytes | memoryview) -> int:
        real_write(fd, memoryview(data)[:ALIGN])  # some of it went, then the disk filled
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", disk_full)
    with pytest.raises(OSError):
        writer.write([b"b" * (3 * ALIGN)])
    monkeypatch.setattr(os, "write", real_write)
    fd = writer._fd
    with pytest.raises(ValueError):
        writer.write([b"c"])
    with pytest.raises(ValueError):
        writer.close()  # no stale partial block written at a wrong offset
    with pytest.raises(OSError):
        os.fstat(fd)
    writer.discard()


def test_any_iterable_of_buffers_is_written_byte_for_byte(direct_dir: Path) -> None:
    words = array.array("I", range(300_000))  # items of 4 bytes: 1.2 MB
    for direct_from in (0, 10 * 1024 * 1024):
        path = direct_dir / f"f{direct_from}"
        path.touch()
        writer = SpoolFile(path, direct_from=direct_from)
        writer.write(memoryview(words)[n:n + 70_000] for n in range(0, len(words), 70_000))
        writer.close()
        assert path.read_bytes() == words.tobytes()


def test_a_dropped_writer_closes_its_descriptor(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.touch()
    writer = SpoolFile(path)
    fd = writer._fd
    del writer
    gc.collect()
    with pytest.raises(OSError):
        os.fstat(fd)


def test_buffers_are_reused_and_only_a_few_kept() -> None:
    pool = spool._Buffers(ALIGN, keep=2)
    taken = [pool.take() for _ in range(3)]
    for buffer in taken:
        pool.give(buffer)
    assert taken[2].closed, "more than `keep` free buffers are unmapped"
    again = {id(pool.take()), id(pool.take())}
    assert again == {id(taken[0]), id(taken[1])}
    assert all(not b.closed for b in taken[:2])


def test_a_forked_child_lets_the_parents_buffers_go() -> None:
    # What os.register_at_fork runs in a child: the buffers, shared with the parent, unused.
    pool = spool._Buffers(ALIGN, keep=2)
    kept = pool.take()
    pool.give(kept)
    pool.forget()
    assert pool._free == [] and pool.take() is not kept


def test_a_buffer_is_held_only_while_a_write_runs(direct_dir: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    pool = spool._BUFFERS
    held: list[mmap.mmap] = []
    take, give = pool.take, pool.give

    def counted_take() -> mmap.mmap:
        held.append(buffer := take())
        return buffer

    def counted_give(buffer: mmap.mmap) -> None:
        held.remove(buffer)
        give(buffer)

    monkeypatch.setattr(pool, "take", counted_take)
    monkeypatch.setattr(pool, "give", counted_give)
    path = direct_dir / "f"
    path.touch()
    writers = [SpoolFile(path, direct_from=0) for _ in range(spool.KEPT_BUFFERS + 4)]
    for writer in writers:  # many files open at once, as in a batch
        writer.write([b"z" * (ALIGN + 1)])
        assert held == [], "a file between writes holds no buffer"
    assert all(len(writer._tail) == 1 for writer in writers)
    for writer in writers:
        writer.discard()


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


MOUNTINFO = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/vda rw
30 22 0:26 / /srv/nfs rw,relatime shared:9 - nfs4 server:/export rw,vers=4.2
31 30 8:2 / /srv/nfs/local\\040disk rw shared:10 - xfs /dev/vdb rw
40 22 0:30 / /dev/shm rw,nosuid - tmpfs tmpfs rw
41 22 0:31 / /srv/fuse rw - fuse.sshfs host: rw
42 41 0:32 / /srv/fuse rw - ext4 /dev/vdc rw
"""


@pytest.mark.parametrize(("path", "kind"), [
    ("/var/lib/darkroom/files", "ext4"),
    ("/srv/nfs/files", "nfs4"),
    ("/srv/nfs", "nfs4"),
    ("/srv/nfsother/files", "ext4"),  # not inside /srv/nfs
    ("/srv/nfs/local disk/files", "xfs"),  # an escaped space
    ("/dev/shm/x", "tmpfs"),
    ("/srv/fuse/files", "ext4"),  # mounted over: the last one counts
])
def test_the_filesystem_of_a_path_comes_from_its_closest_mount(path: str, kind: str) -> None:
    assert filesystem_type(Path(path), MOUNTINFO) == kind


def test_a_mount_hidden_by_a_later_one_over_its_parent_is_told_by_the_device() -> None:
    hidden = MOUNTINFO + "50 22 8:5 / /srv rw - xfs /dev/vde rw\n"  # over /srv and its mounts
    path = Path("/srv/nfs/files")
    assert filesystem_type(path, hidden, device="8:5") == "xfs"
    assert filesystem_type(path, hidden, device="0:26") == "nfs4"
    assert filesystem_type(path, hidden, device="9:9") == "nfs4"  # unknown: longest prefix


def test_direct_io_is_chosen_by_filesystem_unless_set(tmp_path: Path) -> None:
    base = {"DATA_DIR": str(tmp_path)}
    auto = storage_for(Settings.from_env(base))
    assert isinstance(auto, LocalStorage)
    assert auto.direct_io == spool.direct_io_suits(tmp_path / "files")
    mountinfo = Path("/proc/self/mountinfo")
    if mountinfo.exists():
        kind = filesystem_type(tmp_path.resolve(), mountinfo.read_text())
        assert auto.direct_io == (kind in spool.BLOCK_FILESYSTEMS)
    for value, expected in (("true", True), ("false", False)):
        chosen = storage_for(Settings.from_env({**base, "UPLOAD_DIRECT_IO": value}))
        assert isinstance(chosen, LocalStorage) and chosen.direct_io is expected


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
    if not spool.direct_io_suits(tmp_path):
        pytest.skip(f"{tmp_path} is not on a block-device filesystem (DONTNEED may keep pages)")
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


def test_letting_an_original_go_never_fails_the_job(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    storage = LocalStorage(tmp_path / "files")
    storage.ensure_dirs()
    storage.adopt_original(storage.new_temp(), "img_1")
    storage.uncache_original("img_gone")  # a missing file

    def unsupported(*_args: int) -> None:
        raise OSError(errno.ESTALE, "Stale file handle")

    monkeypatch.setattr(os, "posix_fadvise", unsupported, raising=False)
    storage.uncache_original("img_1")  # a volume that refuses the advice
    monkeypatch.delattr(os, "posix_fadvise", raising=False)
    storage.uncache_original("img_1")  # a system without it (macOS)
