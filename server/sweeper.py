"""A periodic task in the web process: send messages of jobs stored but never enqueued.

That happens only when a web process dies between committing a job and enqueueing its
message (a Redis error there answers 503 and removes the job instead). One web process
per interval does the sweep, chosen by a Redis lock.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from server import dispatch, keys

log = logging.getLogger(__name__)


async def run_sweeper(state: Any) -> None:
    """Sweep forever, every SWEEP_INTERVAL_S; errors are logged and the loop goes on."""
    settings = state.settings
    lock = keys.sweeper_lock(settings.redis_prefix)
    while True:
        await asyncio.sleep(settings.sweep_interval_s)
        try:
            if await state.redis.set(lock, "1", nx=True, ex=settings.sweep_interval_s):
                await dispatch.sweep_unsent(state, older_than_s=settings.sweep_after_s)
        except Exception:
            log.exception("sweep failed; trying again in %s s", settings.sweep_interval_s)
