"""An overall deadline on a network exchange, however slowly the peer trickles bytes.

A socket timeout bounds each ``recv``, not the exchange: a peer that sends one byte every
few seconds never trips it, and would hold a worker thread until the job's time limit
(FACTS.md §6). Dramatiq's time limit cannot help either: it is an exception delivered
between bytecodes, and a thread blocked in ``recv`` runs none. So when the deadline
passes, every connection the exchange opened is shut down, which ends the blocked call.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from types import TracebackType


class DeadlinePassed(TimeoutError):
    """The exchange did not finish within its deadline."""


class Deadline:
    """``with Deadline(15) as deadline:``: connections passed to ``watch`` are shut down
    once 15 s have passed since the ``with`` began; ``expired`` tells afterwards."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False
        self._ends = time.monotonic() + seconds
        self._lock = threading.Lock()
        self._done = False
        # Duplicates of the watched sockets: shutting one down ends the connection it shares
        # with the original, and stays possible when the original is wrapped in TLS (which
        # detaches it) or replaced (STARTTLS).
        self._watched: list[socket.socket] = []
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> Deadline:
        self._timer.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self._timer.cancel()
        with self._lock:  # after this, _expire touches nothing: the sockets may be closed
            self._done = True
            watched, self._watched = self._watched, []
        for duplicate in watched:
            duplicate.close()

    def remaining(self) -> float:
        """Seconds left; DeadlinePassed if none."""
        left = self._ends - time.monotonic()
        if left <= 0 or self.expired:
            raise DeadlinePassed(f"no answer within {self.seconds:g} s")
        return left

    def timeout(self, per_operation: float) -> float:
        """A socket timeout for the next step: the per-operation one, or less if the
        deadline is nearer."""
        return min(per_operation, self.remaining())

    def watch(self, sock: socket.socket) -> socket.socket:
        """Shut ``sock`` down when the deadline passes (at once if it has); returns it."""
        duplicate = sock.dup()
        with self._lock:
            if not self._done and not self.expired:
                self._watched.append(duplicate)
                return sock
        with contextlib.suppress(OSError):
            duplicate.shutdown(socket.SHUT_RDWR)
        duplicate.close()
        raise DeadlinePassed(f"no answer within {self.seconds:g} s (or the exchange ended)")

    def _expire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.expired = True
            for duplicate in self._watched:
                with contextlib.suppress(OSError):
                    duplicate.shutdown(socket.SHUT_RDWR)
