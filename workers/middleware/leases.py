"""Job leases in Redis: one run of a job at a time, across every worker process.

Not a middleware: the lease book of this process, which ``JobLifecycle`` takes a lease in
(before a run) and gives back (after it), ``DeadLetters`` gives back after a final failure,
and ``Heartbeat`` refreshes. The worker process running a job holds its lease until it ends.

A redelivered message whose job is leased by a live process must not start a second
run: Dramatiq can redeliver a message whose worker is alive but was silent (a Redis
outage longer than the heartbeat timeout). The heartbeat thread refreshes the leases of
the jobs this process runs; a process that dies stops refreshing, and its leases expire.
A run still going ``max_hold_ms`` after it began is taken for hung (its thread stuck where
the time limit cannot reach it): its lease is no longer refreshed, so that it expires and
the web's sweeper can run the job again, instead of a live process keeping it forever.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable

import redis

from server.core import keys

log = logging.getLogger(__name__)

# Delete the key only if we still hold it (another process may have taken it over).
_REFRESH = """
local held = redis.call("get", KEYS[1])
if (not held) or held == ARGV[1] then
  redis.call("set", KEYS[1], ARGV[1], "px", ARGV[2])
  return 1
end
return 0
"""
_RELEASE = """
if redis.call("get", KEYS[1]) == ARGV[1] then return redis.call("del", KEYS[1]) end
return 0
"""


class Leases:
    """The leases one worker process holds."""

    def __init__(self, client: redis.Redis, prefix: str, ttl_ms: int,
                 max_hold_ms: int | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self.prefix = prefix
        self.ttl_ms = ttl_ms
        self.max_hold_ms = max_hold_ms
        self.owner = uuid.uuid4().hex
        # job id -> when its run began (``clock``'s seconds)
        self._held: dict[str, float] = {}
        self._overdue: set[str] = set()  # let go already (logged once)
        self._clock = clock
        self._lock = threading.Lock()

    def acquire(self, job_id: str) -> bool:
        """Take the job's lease; False while a run of it is alive (here or elsewhere).

        If Redis cannot be asked, the answer is yes unless it runs here: Dramatiq itself
        delivers nothing while Redis is down, so the risk of a second run is smallest then.
        """
        with self._lock:
            if job_id in self._held:
                return False
            self._held[job_id] = self._clock()
        try:
            if self.client.set(keys.job_lease(self.prefix, job_id), self.owner, nx=True,
                               px=self.ttl_ms):
                return True
        except redis.RedisError as exc:
            log.warning("could not check the lease of job %s: %s", job_id, exc)
            return True
        with self._lock:
            self._held.pop(job_id, None)
        return False

    def release(self, job_id: str) -> None:
        with self._lock:
            if job_id not in self._held:
                return
            del self._held[job_id]
            self._overdue.discard(job_id)
        try:
            self.client.eval(_RELEASE, 1, keys.job_lease(self.prefix, job_id), self.owner)
        except redis.RedisError as exc:
            log.warning("could not release the lease of job %s: %s", job_id, exc)

    def refresh(self) -> None:
        """Extend every lease we hold (called by the heartbeat thread), except those of
        runs going for longer than ``max_hold_ms``: they are left to expire. The job stays
        held here (this process starts no second run of it while its thread lives)."""
        now = self._clock()
        with self._lock:
            held = []
            for job_id, began in self._held.items():
                if (self.max_hold_ms is not None
                        and (now - began) * 1000 > self.max_hold_ms):
                    if job_id not in self._overdue:
                        self._overdue.add(job_id)
                        log.error("job %s has run for %d s, past its time limit: its thread "
                                  "looks hung; its lease is let go so that it can run again",
                                  job_id, now - began, extra={"job_id": job_id})
                    continue
                held.append(job_id)
        for job_id in held:
            # Set, not just extended: a lease lost in a Redis restart is taken back,
            # unless another process holds it by now.
            self.client.eval(_REFRESH, 1, keys.job_lease(self.prefix, job_id), self.owner,
                             self.ttl_ms)

