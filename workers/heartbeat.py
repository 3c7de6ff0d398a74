"""Heartbeat middleware: keep this worker process marked alive in Dramatiq's Redis broker.

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

from server import keys

log = logging.getLogger(__name__)


class Heartbeat(dramatiq.Middleware):
    """A daemon thread per worker process that refreshes this broker's heartbeat."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
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
        while not self._stop.wait(self.interval_s):
            try:
                broker.client.zadd(key, {broker.broker_id: int(time.time() * 1000)})
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                log.warning("heartbeat failed: %s", exc)
