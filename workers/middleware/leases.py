"""Job leases in Redis: one run of a job at a time, across every worker process.

Not a middleware: the lease book of this process, which ``JobLifecycle`` takes a lease in
(before a run) and gives back (after it), ``DeadLetters`` gives back after a final failure,
and ``Heartbeat`` refreshes. The worker process running a job holds its lease until it ends.

A redelivered message whose job is leased by a live process must not start a second
run: Dramatiq can redeliver a message whose worker is alive but was silent (a Redis
outage longer than the heartbeat timeout). The heartbeat thread refreshes the leases of
the jobs this process runs; a process that dies stops refreshing, and its leases expire.
So does the lease of a run hung in a call Dramatiq's time limit cannot interrupt (a C call
that never returns), once it is far past its time limit: its job can then run again, in
this process too, and each lease carries its run's own value so that the hung run, should
it ever return, gives back only its own.
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time
import uuid

import redis

from server.core import keys

log = logging.getLogger(__name__)

# Set the lease to ARGV[2] if it is ARGV[1] or gone: a refresh (the same value; a lease lost
# in a Redis restart is taken back, unless another process holds it by now), or a run
# taking over from one hung in this process.
_SET_IF_OURS = """
local held = redis.call("get", KEYS[1])
if (not held) or held == ARGV[1] then
  redis.call("set", KEYS[1], ARGV[2], "px", ARGV[3])
  return 1
end
return 0
"""
# Delete the key only if this run still holds it (another may have taken it over).
_RELEASE = """
if redis.call("get", KEYS[1]) == ARGV[1] then return redis.call("del", KEYS[1]) end
return 0
"""


class _Run:
    """One run of a job in this process: its lease's value, and when it counts as hung."""

    __slots__ = ("overdue_at", "reported", "value")

    def __init__(self, value: str, overdue_at: float) -> None:
        self.value = value
        self.overdue_at = overdue_at
        self.reported = False


class Leases:
    """The leases one worker process holds, one per run of a job."""

    def __init__(self, client: redis.Redis, prefix: str, ttl_ms: int) -> None:
        self.client = client
        self.prefix = prefix
        self.ttl_ms = ttl_ms
        self.owner = uuid.uuid4().hex
        self._held: dict[str, _Run] = {}
        self._runs = itertools.count(1)
        self._lock = threading.Lock()

    def acquire(self, job_id: str, *, overdue_after_ms: float = math.inf) -> str | None:
        """Take the job's lease for a run: its value (hand it to ``release``), or None
        while a run of the job is alive, here or elsewhere.

        A run here that has lasted ``overdue_after_ms`` (its own, given when it began) is
        taken for hung: past its time limit with room to spare, in a call Dramatiq's time
        limit cannot interrupt. Its lease is no longer refreshed, and a new run may take
        the lease over at once (the sweeper sends the job a new message once its lease is
        gone); the hung run's writes are refused, as a superseded attempt's.

        If Redis cannot be asked, the answer is yes unless it runs here: Dramatiq itself
        delivers nothing while Redis is down, so the risk of a second run is smallest then.
        """
        key = keys.job_lease(self.prefix, job_id)
        # Redis is asked under the lock: no refresh or release of this process comes
        # between a run's entry here and its lease in Redis (one quick command).
        with self._lock:
            now = time.monotonic()
            current = self._held.get(job_id)
            if current is not None and now < current.overdue_at:
                return None
            run = _Run(f"{self.owner}:{next(self._runs)}", now + overdue_after_ms / 1000)
            try:
                if current is None:
                    taken = self.client.set(key, run.value, nx=True, px=self.ttl_ms)
                else:
                    taken = self.client.eval(_SET_IF_OURS, 1, key, current.value, run.value,
                                             self.ttl_ms)
            except redis.RedisError as exc:
                log.warning("could not check the lease of job %s: %s", job_id, exc)
                taken = True
            if not taken:
                return None
            self._held[job_id] = run
        if current is not None:
            log.warning("job %s: a new run took over from one hung here", job_id)
        return run.value

    def release(self, job_id: str, value: str) -> None:
        """Give back the lease of the run ``acquire`` gave ``value`` (only that run's)."""
        with self._lock:
            run = self._held.get(job_id)
            if run is not None and run.value == value:
                del self._held[job_id]
            try:
                self.client.eval(_RELEASE, 1, keys.job_lease(self.prefix, job_id), value)
            except redis.RedisError as exc:
                log.warning("could not release the lease of job %s: %s", job_id, exc)

    def held(self) -> list[str]:
        """The jobs with a run here (a hung one included)."""
        with self._lock:
            return list(self._held)

    def refresh(self) -> None:
        """Extend the lease of every run here but hung ones (called by the heartbeat), in
        one round trip; raises RedisError if Redis cannot be asked."""
        hung: list[str] = []
        with self._lock:
            now = time.monotonic()
            live = []
            for job_id, run in self._held.items():
                if now < run.overdue_at:
                    live.append((job_id, run.value))
                elif not run.reported:
                    run.reported = True
                    hung.append(job_id)
            if live:
                with self.client.pipeline(transaction=False) as pipe:
                    for job_id, value in live:
                        pipe.eval(_SET_IF_OURS, 1, keys.job_lease(self.prefix, job_id), value,
                                  value, self.ttl_ms)
                    pipe.execute()
        for job_id in hung:
            log.error("job %s has run far past its time limit in a call that cannot be "
                      "interrupted: its lease is no longer renewed, so it can run again",
                      job_id, extra={"job_id": job_id})
