"""Heartbeat middleware: keep this worker process (and its job leases) alive in Redis.

Dramatiq's consumers refresh the heartbeat only when they talk to Redis; while every
thread is busy with a long job and the prefetch buffer is full they don't, and after
``heartbeat_timeout`` other workers would requeue our unacked messages and run them twice
(dramatiq#692). A thread that beats every quarter of the timeout lets us use a short
timeout, so messages of a worker that really died are redelivered quickly.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker

from server.core import keys
from workers.middleware.leases import Leases

log = logging.getLogger(__name__)

# Dramatiq restarts a consumer 3 s after a connection error; beat well before that.
_RETRY_PAUSE_S = 0.5


class Heartbeat(dramatiq.Middleware):
    """A daemon thread per worker process that refreshes this broker's heartbeat."""

    def __init__(self, interval_s: float, leases: Leases) -> None:
        self.interval_s = interval_s
        self.leases = leases
        self._stop = threading.Event()

    def after_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        assert isinstance(broker, RedisBroker)
        self._stop.clear()
        threading.Thread(target=self._beat, args=(broker,), name="darkroom-heartbeat",
                         daemon=True).start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        self._stop.set()

    def _beat(self, broker: RedisBroker) -> None:
        key = keys.dramatiq_heartbeats(broker.namespace)
        pause = self.interval_s
        while not self._stop.wait(pause):
            try:
                broker.client.zadd(key, {broker.broker_id: int(time.time() * 1000)})
                self.leases.refresh()
                pause = self.interval_s
            except redis.RedisError as exc:
                # Beat again soon: when Redis is back, we must be marked alive (and hold
                # our leases) before consumers elsewhere run maintenance on us.
                log.warning("heartbeat failed: %s", exc)
                pause = _RETRY_PAUSE_S
            except Exception:
                # Anything else must not end this thread: without it, every job of this
                # process would be taken for lost.
                log.exception("heartbeat failed")
                pause = _RETRY_PAUSE_S
