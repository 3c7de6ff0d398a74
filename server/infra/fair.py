"""Fair share: each user's waiting messages are fed to Dramatiq round-robin.

Dramatiq's Redis queues are first come, first served: a user with 1,000 waiting jobs
would make everyone else wait for all of them. So a job's message does not go to the
broker's queue when it is sent; it waits in a list of its user's own (per queue, so per
priority), and a round-robin ring of the users who have messages waiting says whose turn
it is. Messages are moved to the broker's queue only while fewer messages are moved and
not yet ended (waiting there or running) than the live workers consuming it have
threads. A user's single upload therefore waits for about one job per busy worker
thread, however long the others' backlogs are. A user also has at most
``MAX_JOBS_IN_FLIGHT_PER_USER`` messages of one queue family between the move and the end
of their processing.

Every step is one Lua script, so a process killed at any moment (kill -9 included) leaves
each message either in its user's list or in the broker's queue, never in both and never
in neither. The moves happen when a message is sent (in the sending process; the same
script publishes the job's event if it comes with one, see ``push``), when a worker
ends a message, and every ``TICK_S`` in each worker process (for whatever those missed:
a worker that died, a queue resumed by an admin). Each move rings the queue's bell.

Redis keys (``<prefix>:fair:…``; Dramatiq's own are under its namespace):
  ring:<queue>          list of user ids whose turn comes in that order
  ringset:<queue>       the same users, as a set (no user twice in the ring)
  q:<queue>:<user>      list of Dramatiq's redis message ids waiting for that user
  msgs:<queue>          hash: redis message id -> encoded message
  mids:<queue>          hash: redis message id -> the job's message id
  inflight:<base>:<user> sorted set: message ids moved and not yet ended, by move time
  inflight:<base>       the same for every user of the queue family
  threads:<base>        hash: worker (broker id) -> threads it runs for that queue family
  cap:<base>            a user's in-flight cap there, set by the workers serving it
                        (MAX_JOBS_IN_FLIGHT_PER_USER; DELIVERIES_IN_FLIGHT_PER_USER for I/O)
  bell:<queue>          a token per message moved in (the last 64, for 5 s): an idle
                        consumer of the queue waits on it (``broker.PromptConsumer``)
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterable
from typing import Any
from uuid import uuid4

import dramatiq
import redis

from server.core import keys
from server.core.jobs import base_queue, queue_family

log = logging.getLogger(__name__)

# Message option naming the job's owner; it travels with every copy (retries, delays).
USER_OPTION = "darkroom_user"
# How often each worker process moves messages on its own.
TICK_S = 0.25

# ARGV: mode, prefix, namespace, (unused), heartbeat_timeout_ms, per_user_cap, stale_ms,
#       base, paused_key, n, queue_1 .. queue_n (priority order), then by mode:
#   push:    queue, user, redis_message_id, message_id, data[, channel, event (see push)]
#   release: user, message_id
# Returns how many messages it moved to the broker's queues.
_SCRIPT = """
local mode, prefix, namespace = ARGV[1], ARGV[2], ARGV[3]
local timeout = tonumber(ARGV[5])
local cap, stale = tonumber(ARGV[6]), tonumber(ARGV[7])
local base, paused_key, n = ARGV[8], ARGV[9], tonumber(ARGV[10])
local fair = prefix .. ":fair:"
local rest = 10 + n
-- Redis's clock, not the caller's: heartbeats are compared with it.
local clock = redis.call("time")
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
-- The per-user cap the workers serving this family set (else the caller's).
local family_cap = redis.call("get", fair .. "cap:" .. base)
if family_cap then cap = tonumber(family_cap) end

if mode == "push" then
  local queue, user, rid, mid = ARGV[rest + 1], ARGV[rest + 2], ARGV[rest + 3], ARGV[rest + 4]
  redis.call("hset", fair .. "msgs:" .. queue, rid, ARGV[rest + 5])
  redis.call("hset", fair .. "mids:" .. queue, rid, mid)
  redis.call("rpush", fair .. "q:" .. queue .. ":" .. user, rid)
  if redis.call("sadd", fair .. "ringset:" .. queue, user) == 1 then
    redis.call("rpush", fair .. "ring:" .. queue, user)
  end
elseif mode == "release" then
  redis.call("zrem", fair .. "inflight:" .. base .. ":" .. ARGV[rest + 1], ARGV[rest + 2])
  redis.call("zrem", fair .. "inflight:" .. base, ARGV[rest + 2])
end
-- A push sent with its job's event (job:queued) publishes it last: no worker can take
-- the message before the script has ended (job:active comes after it), and a script
-- that stops on an error publishes nothing.
local function done(moved)
  if mode == "push" and ARGV[rest + 6] then
    redis.call("publish", ARGV[rest + 6], ARGV[rest + 7])
  end
  return moved
end

if redis.call("sismember", paused_key, base) == 1 then return done(0) end

-- The threads of the live workers consuming this queue family.
local threads_key = fair .. "threads:" .. base
local workers = redis.call("hgetall", threads_key)
local capacity = 0
for i = 1, #workers, 2 do
  local beat = redis.call("zscore", namespace .. ":__heartbeats__", workers[i])
  if beat and now - tonumber(beat) < timeout then
    capacity = capacity + tonumber(workers[i + 1])
  else
    redis.call("hdel", threads_key, workers[i])
  end
end
-- Moved and not yet ended, whoever's: waiting in Dramatiq's queue or running.
local all = fair .. "inflight:" .. base
redis.call("zremrangebyscore", all, "-inf", now - stale)
local free = capacity - redis.call("zcard", all)

local moved = 0
for q = 1, n do
  if free <= 0 then break end
  local queue = ARGV[10 + q]
  local ring, ringset = fair .. "ring:" .. queue, fair .. "ringset:" .. queue
  local skipped, rung = 0, 0
  while free > 0 do
    local users = redis.call("llen", ring)
    if users == 0 or skipped >= users then break end
    local user = redis.call("lpop", ring)
    local list = fair .. "q:" .. queue .. ":" .. user
    local inflight = fair .. "inflight:" .. base .. ":" .. user
    redis.call("zremrangebyscore", inflight, "-inf", now - stale)
    if redis.call("llen", list) == 0 then
      redis.call("srem", ringset, user)
    elseif cap > 0 and redis.call("zcard", inflight) >= cap then
      redis.call("rpush", ring, user)
      skipped = skipped + 1
    else
      local rid = redis.call("lpop", list)
      local data = redis.call("hget", fair .. "msgs:" .. queue, rid)
      local mid = redis.call("hget", fair .. "mids:" .. queue, rid)
      redis.call("hdel", fair .. "msgs:" .. queue, rid)
      redis.call("hdel", fair .. "mids:" .. queue, rid)
      if data then
        redis.call("hset", namespace .. ":" .. queue .. ".msgs", rid, data)
        redis.call("rpush", namespace .. ":" .. queue, rid)
        redis.call("rpush", fair .. "bell:" .. queue, 1)
        rung = rung + 1
        redis.call("zadd", inflight, now, mid)
        redis.call("zadd", all, now, mid)
        free = free - 1
        moved = moved + 1
      end
      if redis.call("llen", list) > 0 then
        redis.call("rpush", ring, user)
      else
        redis.call("srem", ringset, user)
      end
      skipped = 0
    end
  end
  -- Rung once per message moved. Nobody may be waiting, so the bell is kept short and
  -- short-lived (its time runs from its last ring).
  if rung > 0 then
    local bell = fair .. "bell:" .. queue
    redis.call("ltrim", bell, -BELL_TOKENS, -1)
    redis.call("pexpire", bell, BELL_TTL_MS)
  end
end
return done(moved)
"""


# The bell's tokens kept at most, and for how long (a consumer that wakes to an empty
# queue only polls once more).
_BELL_TOKENS = 64
_BELL_TTL_MS = 5_000
_SCRIPT = (_SCRIPT.replace("BELL_TOKENS", str(_BELL_TOKENS))
           .replace("BELL_TTL_MS", str(_BELL_TTL_MS)))


def ring(pipe: Any, prefix: str, queue: str) -> None:
    """Add to a pipeline the commands that ring a queue's bell once, as the script rings
    it: for a message sent straight into Dramatiq's queue (one without an owner)."""
    bell = keys.fair_bell(prefix, queue)
    pipe.rpush(bell, 1)
    pipe.ltrim(bell, -_BELL_TOKENS, -1)
    pipe.pexpire(bell, _BELL_TTL_MS)


class FairQueues:
    """The per-user waiting lists in front of one deployment's Dramatiq queues."""

    def __init__(self, client: redis.Redis, *, prefix: str, heartbeat_timeout_ms: int,
                 per_user_cap: int, stale_ms: int) -> None:
        self.client = client
        self.prefix = prefix
        self.namespace = keys.dramatiq_namespace(prefix)
        self.heartbeat_timeout_ms = heartbeat_timeout_ms
        self.per_user_cap = per_user_cap
        self.stale_ms = stale_ms
        self._script = client.register_script(_SCRIPT)

    def _args(self, mode: str, base: str, extra: Iterable[str]) -> list[str | int]:
        family = queue_family(base)  # high, normal, low: the order turns are offered in
        return [mode, self.prefix, self.namespace, 0, self.heartbeat_timeout_ms,
                self.per_user_cap, self.stale_ms, base, keys.paused_queues(self.prefix),
                len(family), *family, *extra]

    def _run(self, mode: str, base: str, extra: Iterable[str]) -> int:
        return int(self._script(keys=[], args=self._args(mode, base, extra)))

    def push(self, message: Any, user_id: str, *,
             announce: tuple[str, str] | None = None) -> Any:
        """Put a message (for its queue now, not delayed) in its user's list and take the
        turns free places allow; returns the message as stored (with the redis message id
        Dramatiq's queues need).

        ``announce``: a channel and an event (the job's job:queued) published by the
        same script, last: no worker can take the message before the script ends, so none
        can begin the job (job:active) before that event is out; a script that stops on
        an error (Redis refusing writes stops it at its first) publishes nothing.
        """
        message = message.copy(options={"redis_message_id": str(uuid4())})
        self._run("push", base_queue(message.queue_name),
                  [message.queue_name, user_id, message.options["redis_message_id"],
                   message.message_id, message.encode().decode(), *(announce or ())])
        return message

    def release(self, message: Any) -> int:
        """The message's processing ended (done, failed, retry scheduled or skipped):
        its owner has one fewer in flight, and the next turns are taken."""
        user = message.options.get(USER_OPTION)
        base = base_queue(message.queue_name)
        if not user:
            return self.dispatch(base)
        return self._run("release", base, [str(user), message.message_id])

    def dispatch(self, base: str) -> int:
        """Move waiting messages of a queue family to the broker while threads are free."""
        return self._run("dispatch", base, [])

    def offer_threads(self, worker_id: str, bases: Iterable[str], threads: int,
                      per_user_cap: int | None = None) -> None:
        """Say that this worker runs ``threads`` threads for each of these queue families
        (counted while its Dramatiq heartbeat is fresh), and each user's cap there."""
        pipe = self.client.pipeline(transaction=False)
        for base in bases:
            pipe.hset(keys.fair_threads(self.prefix, base), worker_id, threads)
            if per_user_cap is not None:
                pipe.set(keys.fair_cap(self.prefix, base), per_user_cap)
        pipe.execute()

    def withdraw_threads(self, worker_id: str, bases: Iterable[str]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for base in bases:
            pipe.hdel(keys.fair_threads(self.prefix, base), worker_id)
        pipe.execute()

    def waiting(self, queue: str) -> int:
        """Messages of one queue still in their users' lists."""
        return int(self.client.hlen(keys.fair_messages(self.prefix, queue)))


class FairDispatch(dramatiq.Middleware):
    """In each worker process: offer its threads, end messages, take turns every TICK_S."""

    def __init__(self, fair: FairQueues, *, offer_every_s: float,
                 per_user_cap: int | None = None) -> None:
        self.fair = fair
        self.offer_every_s = offer_every_s
        self.per_user_cap = per_user_cap
        self._stop = threading.Event()
        self._bases: list[str] = []
        self._worker_id = ""
        self._lock = threading.Lock()
        self._unreleased: list[Any] = []

    def after_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        whitelist = worker.consumer_whitelist
        self._bases = sorted({base_queue(q) for q in broker.get_declared_queues()
                              if not q.endswith((".DQ", ".XQ"))
                              and (not whitelist or q in whitelist)})
        self._worker_id = str(getattr(broker, "broker_id", ""))
        self._stop.clear()
        threading.Thread(target=self._tick, args=(int(worker.worker_threads),),
                         name="darkroom-fair", daemon=True).start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        self._stop.set()
        with contextlib.suppress(redis.RedisError):
            self.fair.withdraw_threads(self._worker_id, self._bases)

    def _tick(self, threads: int) -> None:
        offered_at = 0.0
        while not self._stop.wait(TICK_S):
            try:
                if time.monotonic() - offered_at >= self.offer_every_s:
                    self.fair.offer_threads(self._worker_id, self._bases, threads,
                                            self.per_user_cap)
                    offered_at = time.monotonic()
                self._release_pending()
                for base in self._bases:
                    self.fair.dispatch(base)
            except redis.RedisError as exc:
                log.warning("fair dispatch failed: %s", exc)
                offered_at = 0.0

    def _end(self, message: Any) -> None:
        try:
            self.fair.release(message)
        except redis.RedisError as exc:
            # Tried again every tick (were the process to die first, the entry would stop
            # counting after stale_ms); meanwhile it holds one place.
            log.warning("could not release job %s's turn: %s", message.message_id, exc)
            with self._lock:
                self._unreleased.append(message)

    def _release_pending(self) -> None:
        with self._lock:
            pending, self._unreleased = self._unreleased, []
        for n, message in enumerate(pending):
            try:
                self.fair.release(message)
            except redis.RedisError:
                with self._lock:
                    self._unreleased.extend(pending[n:])
                raise

    def after_process_message(self, broker: dramatiq.Broker, message: Any, *,
                              result: Any = None, exception: BaseException | None = None) -> None:
        self._end(message)

    def after_skip_message(self, broker: dramatiq.Broker, message: Any) -> None:
        self._end(message)
