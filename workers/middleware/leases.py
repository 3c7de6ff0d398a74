"""Job leases in Redis: one run of a job at a time, across every worker process.

Not a middleware: the lease book of this process, which ``JobLifecycle`` takes a lease in
(before a run) and gives back (after it), ``DeadLetters`` gives back after a final failure,
and ``Heartbeat`` refreshes. The worker process running a job holds its lease until it ends.

A redelivered message whose job is leased by a live process must not start a second
run: Dramatiq can redeliver a message whose worker is alive but was silent (a Redis
outage longer than the heartbeat timeout). The heartbeat thread refreshes the leases of
the jobs this process runs; a process that dies stops refreshing, and its leases expire.
"""

from __future__ import annotations

import logging
import threading
import uuid

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

    def __init__(self, client: redis.Redis, prefix: str, ttl_ms: int) -> None:
        self.client = client
        self.prefix = prefix
        self.ttl_ms = ttl_ms
        self.owner = uuid.uuid4().hex
        self._held: set[str] = set()
        self._lock = threading.Lock()

    def acquire(self, job_id: str) -> bool:
        """Take the job's lease; False while a run of it is alive (here or elsewhere).

        If Redis cannot be asked, the answer is yes unless it runs here: Dramatiq itself
        delivers nothing while Redis is down, so the risk of a second run is smallest then.
        """
        with self._lock:
            if job_id in self._held:
                return False
            self._held.add(job_id)
        try:
            if self.client.set(keys.job_lease(self.prefix, job_id), self.owner, nx=True,
                               px=self.ttl_ms):
                return True
        except redis.RedisError as exc:
            log.warning("could not check the lease of job %s: %s", job_id, exc)
            return True
        with self._lock:
            self._held.discard(job_id)
        return False

    def release(self, job_id: str) -> None:
        with self._lock:
            if job_id not in self._held:
                return
            self._held.discard(job_id)
        try:
            self.client.eval(_RELEASE, 1, keys.job_lease(self.prefix, job_id), self.owner)
        except redis.RedisError as exc:
            log.warning("could not release the lease of job %s: %s", job_id, exc)

    def refresh(self) -> None:
        """Extend every lease we hold (called by the heartbeat thread)."""
        with self._lock:
            held = list(self._held)
        for job_id in held:
            # Set, not just extended: a lease lost in a Redis restart is taken back,
            # unless another process holds it by now.
            self.client.eval(_REFRESH, 1, keys.job_lease(self.prefix, job_id), self.owner,
                             self.ttl_ms)

