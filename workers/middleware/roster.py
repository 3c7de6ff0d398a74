"""Roster middleware: each worker process reports what its threads run, for the dashboard.

Every ``interval_s`` a daemon thread writes this process's ``wire.Worker`` (threads busy
and idle, the job each busy thread runs, memory, jobs handled) to Redis with an expiry
of WORKER_FORGET_S, and its time in the roster (``keys.worker_roster``). The web process
reads them (``server.services.workers``): a report older than the heartbeat timeout is a
dead process, shown as such until its report expires. A clean stop leaves at once.
"""

from __future__ import annotations

import logging
import os
import resource
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import dramatiq
import msgspec
import redis

from server.core import keys
from server.core.jobs import base_queue
from server.core.wire import responses as wire
from server.data.models import iso
from workers.middleware.lifecycle import job_id_of

log = logging.getLogger(__name__)


def resident_bytes() -> int:
    """This process's resident memory (Linux: now; elsewhere: its peak)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class Roster(dramatiq.Middleware):
    """Tracks the job each worker thread runs and reports the process every ``interval_s``."""

    def __init__(self, client: redis.Redis, prefix: str, *, pool: str, interval_s: float,
                 forget_after_s: int, clock: Callable[[], float] = time.time) -> None:
        self.client, self.prefix, self.pool, self.clock = client, prefix, pool, clock
        self.interval_s, self.forget_after_s = interval_s, forget_after_s
        self.id = f"{socket.gethostname()}:{os.getpid()}"
        self._started = iso(datetime.now(UTC)) or ""
        self._running: dict[str, wire.RunningJob] = {}
        self._threads, self._queues = 0, list[str]()
        self._done = self._failed = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._reporter: threading.Thread | None = None

    # -- what the threads do --
    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        job = wire.RunningJob(thread=threading.current_thread().name, job_id=job_id_of(message),
                              type=message.actor_name.split("@")[0],
                              since=iso(datetime.now(UTC)) or "")
        with self._lock:
            self._running[job.thread] = job

    def after_process_message(self, broker: dramatiq.Broker, message: Any, *,
                              result: Any = None, exception: BaseException | None = None) -> None:
        with self._lock:
            self._running.pop(threading.current_thread().name, None)
            self._done += 1
            self._failed += exception is not None

    def after_skip_message(self, broker: dramatiq.Broker, message: Any) -> None:
        with self._lock:
            self._running.pop(threading.current_thread().name, None)

    # -- the reports --
    def after_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        self._threads = int(worker.worker_threads)
        self._queues = sorted({base_queue(q) for q in broker.get_declared_queues()})
        self._stop.clear()
        self._reporter = threading.Thread(target=self._report_every, name="darkroom-roster",
                                          daemon=True)
        self._reporter.start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        self._stop.set()
        if self._reporter is not None:  # its last report must not land after we leave
            self._reporter.join(timeout=5)
        try:  # gone at once, not shown dead for WORKER_FORGET_S
            pipe = self.client.pipeline(transaction=False)
            pipe.zrem(keys.worker_roster(self.prefix), self.id)
            pipe.delete(keys.worker_report(self.prefix, self.id))
            pipe.execute()
        except redis.RedisError as exc:
            log.warning("could not leave the workers roster: %s", exc)

    def report(self) -> wire.Worker:
        """This process as it stands."""
        now = datetime.fromtimestamp(self.clock(), UTC)
        host, _, pid = self.id.rpartition(":")
        with self._lock:
            running = sorted(self._running.values(), key=lambda job: job.thread)
            done, failed = self._done, self._failed
        return wire.Worker(
            id=self.id, host=host, pid=int(pid), pool=self.pool, queues=list(self._queues),
            threads=self._threads, busy=len(running), running=running,
            memory_bytes=resident_bytes(), jobs_done=done, jobs_failed=failed,
            started_at=self._started, reported_at=iso(now) or "", heartbeat_age_s=0.0,
            alive=True)

    def send(self) -> None:
        """Write the report and this process's place in the roster."""
        pipe = self.client.pipeline(transaction=False)
        pipe.set(keys.worker_report(self.prefix, self.id), msgspec.json.encode(self.report()),
                 ex=self.forget_after_s)
        now_ms = int(self.clock() * 1000)
        roster = keys.worker_roster(self.prefix)
        pipe.zadd(roster, {self.id: now_ms})
        # Those gone (their reports expired) leave the roster even if no dashboard looks.
        pipe.zremrangebyscore(roster, 0, now_ms - self.forget_after_s * 1000)
        pipe.execute()

    def _report_every(self) -> None:
        pause = 0.0
        while not self._stop.wait(pause):
            pause = self.interval_s
            try:
                self.send()
            except Exception as exc:  # Redis away, or anything: the next round tries again
                log.warning("could not report to the workers roster: %s", exc)
