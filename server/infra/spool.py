"""Write a new file front to back; a large one past the page cache (``O_DIRECT``).

An upload's original is written once by the web process and read once by a worker, soon
after; then it waits, unread, for its retention to end. Through the page cache each new
file takes fresh pages, which is costly where memory is not yet backed (a VM's first
touch of a page, or reclaim on a full host): 3.6 MB cost the web 6.6 ms of CPU on this
machine's VM in the end-to-end run, against 0.9 ms through ``O_DIRECT`` from a reused
aligned buffer. It also keeps originals from crowding out of the cache what is read
often (renditions, the database). Below ``DIRECT_MIN_BYTES`` the ordinary write is the
cheaper (100 KB: 0.06 ms against 0.3), so a file whose first write is that small is
written the ordinary way throughout.

``O_DIRECT`` wants the buffer's address, the length and the file offset aligned, so bytes
are gathered in an aligned buffer and written in whole blocks; the last partial block
goes through the page cache at ``close``. A volume that refuses ``O_DIRECT`` (``EINVAL``
when it is turned on, or at a write) gets the same bytes written the ordinary way, and
so does every file when UPLOAD_DIRECT_IO is off.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import threading
from collections.abc import Iterable
from pathlib import Path

# Covers every block device's logical block size (512 or 4096 bytes).
ALIGN = 4096
BUFFER_BYTES = 1024 * 1024
# A file whose first write is smaller is written through the page cache.
DIRECT_MIN_BYTES = 512 * 1024
_O_DIRECT: int = getattr(os, "O_DIRECT", 0)
# Free buffers kept for the next files: a fresh mapping per file costs more CPU than the
# file's writes (its pages' first touch, the unmap: 1.0 of 1.5 ms for a 3.6 MB file).
KEPT_BUFFERS = 8


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
        return mmap.mmap(-1, self.size)

    def give(self, buffer: mmap.mmap) -> None:
        with self._lock:
            if len(self._free) < self.keep:
                self._free.append(buffer)
                return
        buffer.close()


_BUFFERS = _Buffers(BUFFER_BYTES, KEPT_BUFFERS)


class SpoolFile:
    """Append-only writer for one new, empty file; not thread-safe (one owner at a time)."""

    def __init__(self, path: Path, *, direct: bool = True, buffer_bytes: int = BUFFER_BYTES,
                 direct_from: int = DIRECT_MIN_BYTES) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        self._want_direct = direct and bool(_O_DIRECT)
        self._direct_from = direct_from
        self._started = False
        self.direct = False
        self._fill = 0
        size = max(ALIGN, buffer_bytes - buffer_bytes % ALIGN)
        self._pool = _BUFFERS if size == _BUFFERS.size else _Buffers(size, keep=0)
        # mmap memory is page-aligned, as O_DIRECT needs; taken once the file goes direct.
        self._buffer: mmap.mmap | None = None

    def write(self, chunks: Iterable[bytes | memoryview]) -> None:
        """Append the chunks, in order."""
        if not self._started:
            chunks = list(chunks)
            self._started = True
            if self._want_direct and sum(len(c) for c in chunks) >= self._direct_from:
                self._start_direct()
        if self._buffer is None:
            _write_fully(self._fd, b"".join(chunks))
            return
        buffer, size = self._buffer, len(self._buffer)
        for chunk in chunks:
            view = memoryview(chunk).cast("B")
            while view:
                take = min(len(view), size - self._fill)
                buffer[self._fill:self._fill + take] = view[:take]
                self._fill += take
                view = view[take:]
                if self._fill == size:
                    self._flush_blocks()

    def _start_direct(self) -> None:
        """Turn O_DIRECT on (at offset 0: aligned), unless the volume refuses it."""
        try:
            flags = fcntl.fcntl(self._fd, fcntl.F_GETFL)
            fcntl.fcntl(self._fd, fcntl.F_SETFL, flags | _O_DIRECT)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            return
        self.direct = True
        self._buffer = self._pool.take()

    def close(self) -> None:
        """Write what is left (the last partial block, through the page cache) and close."""
        if self._fd < 0:
            return
        try:
            if self._buffer is not None and self._fill:
                self._flush_blocks()
                if self._fill:
                    self._stop_direct()
                    _write_fully(self._fd, self._buffer[:self._fill])
                    self._fill = 0
        finally:
            self.discard()

    def discard(self) -> None:
        """Close without writing what is still buffered (the upload is being thrown away)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._buffer is not None:
            self._pool.give(self._buffer)
            self._buffer = None

    def _flush_blocks(self) -> None:
        """Write the buffer's whole blocks; keep the partial one at its start."""
        assert self._buffer is not None
        whole = self._fill - self._fill % ALIGN
        if not whole:
            return
        done = 0
        with memoryview(self._buffer) as view:
            while done < whole:
                try:
                    done += os.write(self._fd, view[done:whole])
                except OSError as exc:
                    # A volume that took O_DIRECT but refuses an aligned write (nothing
                    # of that write was written): the rest goes the ordinary way.
                    if exc.errno != errno.EINVAL or not self.direct:
                        raise
                    self._stop_direct()
        rest = self._fill - whole
        if rest:
            self._buffer[:rest] = self._buffer[whole:self._fill]
        self._fill = rest

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
