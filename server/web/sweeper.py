"""A periodic task in the web process: find jobs that would wait forever, send them again.

See ``dispatch.sweep`` for which jobs; one web process per interval does the sweep,
chosen by a Redis lock.
"""

from __future__ import annotations

import asyncio
import logging

import redis

from server.core import keys
from server.services import dispatch
from server.services.context import Services

log = logging.getLogger(__name__)


async def run_sweeper(state: Services) -> None:
    """Sweep forever, every SWEEP_INTERVAL_S; errors are logged and the loop goes on."""
    settings = state.settings
    lock = keys.sweeper_lock(settings.redis_prefix)
    while True:
        await asyncio.sleep(settings.sweep_interval_s)
        try:
            if await state.redis.set(lock, "1", nx=True, ex=settings.sweep_interval_s):
                await dispatch.sweep(state)
        except redis.RedisError as exc:
            log.warning("sweep skipped, Redis unavailable: %s", exc)
        except Exception:
            log.exception("sweep failed; trying again in %s s", settings.sweep_interval_s)
