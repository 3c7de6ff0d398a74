"""Write a new file front to back; once it is large, past the page cache (``O_DIRECT``).

An upload's original is written once by the web process and read once by a worker, soon
after; then it waits, unread, for its retention to end. Through the page cache each new
file takes pages the cache did not hold: where those are fresh (a VM's first touch of a
page, as on the machine the benchmarks ran on, or reclaim on a host whose memory is
full) that is the costliest part of receiving an upload. There, a 3.6 MB file cost the
web 6.6 ms of CPU through the cache while it grew, 0.9 ms through it when the cache
could reuse pages it had just freed, and 0.5-0.9 ms through ``O_DIRECT`` from a reused
aligned buffer whatever the cache held. It also keeps originals from crowding out of the
cache what is read often (renditions, the database). Small files are cheaper the
ordinary way (100 KB: 0.06 ms against 0.3), so a file goes ``O_DIRECT`` only once
``DIRECT_MIN_BYTES`` of it have come.

``O_DIRECT`` wants the buffer's address, the length and the file offset aligned, so bytes
are gathered in an aligned buffer, only for the length of a ``write`` call, and written in
whole blocks; the partial last block is kept (under 4 KiB) for the next call, and goes
through the page cache at ``close``. A volume that refuses ``O_DIRECT`` (when it is turned
on, or at a write) gets the same bytes written the ordinary way.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import threading
import weakref
from collections.abc import Iterable, Sequence
from pathlib import Path

# Covers every block device's logical block size (512 or 4096 bytes).
ALIGN = 4096
# Room for a whole batch of an upload's bytes (uploads.FLUSH_BYTES, 1 MiB, plus the network
# chunk that passed it): each batch's whole blocks go in one write.
BUFFER_BYTES = 2 * 1024 * 1024
# A file goes past the page cache once this much of it has come.
DIRECT_MIN_BYTES = 512 * 1024
_O_DIRECT: int = getattr(os, "O_DIRECT", 0)
# How a volume says it does not do O_DIRECT (or not with these alignments).
_REFUSALS = {errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP}
# Free buffers kept for the next writes: a fresh mapping each time costs more CPU than the
# writes (its pages' first touch, the unmap: 1.0 of 1.5 ms for a 3.6 MB file). A buffer
# is held only while a write call runs, so a few serve every upload of a process.
KEPT_BUFFERS = 8
# Local block-device filesystems, where O_DIRECT goes straight to the disk. On network and
# FUSE filesystems (NFS, CephFS, SMB, ...) it may mean a round trip, or a commit on the
# server, per write: UPLOAD_DIRECT_IO=auto leaves those the ordinary way.
BLOCK_FILESYSTEMS = frozenset({"ext2", "ext3", "ext4", "xfs", "btrfs", "f2fs", "jfs",
                               "bcachefs"})


class _Buffers:
    """Page-aligned buffers of one size, reused; at most ``keep`` wait unused."""

    def __init__(self, size: int, keep: int) -> None:
        self.size = size
        self.keep = keep
        self._free: list[mmap.mmap] = []
        self._lock = threading.Lock()

    def take(self) -> mmap.mmap:
        with self._lock:
            if self._free:
                return self._free.pop()
        # Shared anonymous memory (the mmap module's default): O_DIRECT writes from it cost
        # the web less CPU than from private pages (a 1.3 MB upload: 0.2-1.0 ms), which
        # the kernel must pin for the device. A forked child starts with an empty pool.
        return mmap.mmap(-1, self.size)

    def give(self, buffer: mmap.mmap) -> None:
        with self._lock:
            if len(self._free) < self.keep:
                self._free.append(buffer)
                return
        buffer.close()

    def forget(self) -> None:
        """In a forked child: let go of the parent's buffers (shared with it) unused."""
        self._free = []
        self._lock = threading.Lock()


_BUFFERS = _Buffers(BUFFER_BYTES, KEPT_BUFFERS)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_BUFFERS.forget)


class SpoolFile:
    """Append-only writer for one new, empty file. Its calls may come from different
    threads; one that comes after ``close`` or ``discard`` raises ValueError."""

    def __init__(self, path: Path, *, direct: bool = True, buffer_bytes: int = BUFFER_BYTES,
                 direct_from: int = DIRECT_MIN_BYTES) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        self._fd = fd
        # Closes the descriptor should the writer be dropped unclosed.
        self._finalizer = weakref.finalize(self, os.close, fd)
        self._lock = threading.Lock()
        self._want_direct = direct and bool(_O_DIRECT)
        self._direct_from = direct_from
        self.direct = False
        self._written = 0  # bytes given so far
        self._failed = False
        # The partial last block (what the file holds past its last whole block, or, once
        # direct, what has not been written yet).
        self._tail = b""
        size = max(ALIGN, buffer_bytes - buffer_bytes % ALIGN)
        self._pool = _BUFFERS if size == _BUFFERS.size else _Buffers(size, keep=0)

    def write(self, chunks: Iterable[bytes | memoryview]) -> None:
        """Append the chunks, in order. After a write that failed, the writer only takes
        ``discard`` (what the file holds is not known)."""
        views = [memoryview(chunk).cast("B") for chunk in chunks]
        with self._lock:
            if self._fd < 0 or self._failed:
                raise ValueError("write to a closed or failed SpoolFile")
            try:
                size = sum(view.nbytes for view in views)
                if not self.direct and not (self._want_direct
                                            and self._written + size >= self._direct_from
                                            and self._start_direct()):
                    data = b"".join(views)
                    _write_fully(self._fd, data)
                    self._keep_tail(data)
                    return
                self._write_direct(views)
                self._written += size
            except BaseException:
                self._failed = True
                raise

    def close(self) -> None:
        """Write what is left (the partial last block, through the page cache) and close.
        After a failed write it only closes, and raises ValueError."""
        with self._lock:
            if self._fd < 0:
                return
            try:
                if self._failed:
                    raise ValueError("a write to this file failed: it is incomplete")
                if self.direct and self._tail:
                    self._stop_direct()
                    _write_fully(self._fd, self._tail)
            finally:
                self._close()

    def discard(self) -> None:
        """Close without writing what is still held (the upload is being thrown away)."""
        with self._lock:
            self._close()

    def _close(self) -> None:
        fd, self._fd = self._fd, -1
        self._tail = b""
        if fd >= 0:
            self._finalizer.detach()
            os.close(fd)

    def _keep_tail(self, data: bytes) -> None:
        """After an ordinary write of ``data``: the file's partial last block."""
        self._written += len(data)
        partial = self._written % ALIGN
        if partial == 0:
            self._tail = b""
        elif partial <= len(data):
            self._tail = data[-partial:]
        else:
            self._tail += data

    def _start_direct(self) -> bool:
        """Turn O_DIRECT on, unless the volume refuses it; the partial last block written
        so far is written again, whole, from the next aligned write."""
        try:
            flags = fcntl.fcntl(self._fd, fcntl.F_GETFL)
            fcntl.fcntl(self._fd, fcntl.F_SETFL, flags | _O_DIRECT)
        except OSError as exc:
            if exc.errno not in _REFUSALS:
                raise
            self._want_direct = False
            return False
        os.lseek(self._fd, self._written - len(self._tail), os.SEEK_SET)
        self.direct = True
        return True

    def _write_direct(self, views: Sequence[memoryview]) -> None:
        """Through an aligned buffer: the held partial block, then the bytes; whole blocks
        are written, the partial last one is held again."""
        buffer = self._pool.take()
        try:
            size = len(buffer)
            fill = len(self._tail)
            buffer[:fill] = self._tail
            for view in views:
                while view:
                    take = min(len(view), size - fill)
                    buffer[fill:fill + take] = view[:take]
                    fill += take
                    view = view[take:]
                    if fill == size:
                        self._write_blocks(buffer, size)
                        fill = 0
            whole = fill - fill % ALIGN
            self._write_blocks(buffer, whole)
            self._tail = buffer[whole:fill]
            if not self.direct and self._tail:
                # The volume refused an aligned write: the partial block goes now, as an
                # ordinary write's would, and stays the file's partial last block.
                _write_fully(self._fd, self._tail)
        finally:
            self._pool.give(buffer)

    def _write_blocks(self, buffer: mmap.mmap, length: int) -> None:
        """Write ``buffer[:length]``: whole blocks, unless the volume refused O_DIRECT."""
        done = 0
        with memoryview(buffer) as view:
            while done < length:
                try:
                    done += os.write(self._fd, view[done:length])
                except OSError as exc:
                    # A volume that took O_DIRECT but refuses an aligned write (nothing
                    # of that write was written): the rest goes the ordinary way.
                    if exc.errno not in _REFUSALS or not self.direct:
                        raise
                    self._stop_direct()
                    self._want_direct = False

    def _stop_direct(self) -> None:
        if self.direct:
            flags = fcntl.fcntl(self._fd, fcntl.F_GETFL)
            fcntl.fcntl(self._fd, fcntl.F_SETFL, flags & ~_O_DIRECT)
            self.direct = False


def _write_fully(fd: int, data: bytes | memoryview) -> None:
    with memoryview(data) as view:
        while view:
            written = os.write(fd, view)
            view = view[written:]


def filesystem_type(path: Path, mountinfo: str, device: str | None = None) -> str | None:
    """The type of the filesystem ``path`` (absolute, resolved) is on, from the text of
    ``/proc/self/mountinfo``: the last mount of ``device`` ("major:minor", from a stat of
    the path) that holds it; else (no device given, or none matches) the mount with the
    longest mount point that holds it."""
    by_device: str | None = None
    best: tuple[int, str] | None = None
    target = str(path)
    for line in mountinfo.splitlines():
        fields = line.split()
        if " - " not in line or len(fields) < 5:
            continue
        mount_point = _unescape(fields[4])
        fs_type = line.split(" - ", 1)[1].split()[0]
        inside = (target == mount_point or mount_point == "/"
                  or target.startswith(mount_point.rstrip("/") + "/"))
        if not inside:
            continue
        if device is not None and fields[2] == device:
            by_device = fs_type
        if best is None or len(mount_point) >= best[0]:
            best = (len(mount_point), fs_type)
    if by_device is not None:
        return by_device
    return best[1] if best else None


def _unescape(field: str) -> str:
    """mountinfo's octal escapes (``\\040`` for a space)."""
    if "\\" not in field:
        return field
    return field.encode().decode("unicode_escape").encode("latin-1").decode(
        "utf-8", "replace")


def direct_io_suits(path: Path) -> bool:
    """Whether ``path`` is on a local block-device filesystem (UPLOAD_DIRECT_IO=auto)."""
    try:
        mountinfo = Path("/proc/self/mountinfo").read_text()
    except OSError:
        return False  # not Linux: O_DIRECT is Linux's
    path = path.resolve()
    device = None
    for existing in (path, *path.parents):  # the folder may not be made yet
        try:
            dev = existing.stat().st_dev
        except OSError:
            continue
        device = f"{os.major(dev)}:{os.minor(dev)}"
        break
    return filesystem_type(path, mountinfo, device) in BLOCK_FILESYSTEMS
