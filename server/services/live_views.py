"""What readers show of running jobs: their rows with the live state laid over
(``server.core.live``), so that every read agrees with the last pushed event."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TypeVar

import redis

from server.core import live
from server.core.jobs import JobState
from server.data.store import BatchProgress, JobView
from server.infra.bus import Bus, SyncBus

log = logging.getLogger(__name__)
V = TypeVar("V", bound=Sequence[JobView])


def running(views: Sequence[JobView]) -> list[str]:
    """The ids of the active jobs among ``views``."""
    return [v.job.id for v in views if v.job.state == JobState.ACTIVE.value]


def lay_over(views: Sequence[JobView], states: Mapping[str, live.LiveState]) -> None:
    """Show each running job's live stage, progress and seq (on the rows read, which
    belong to this reader alone)."""
    for v in views:
        shown = live.shown(v.job.state, v.job.attempt, v.job.seq, states.get(v.job.id))
        if shown is not None:
            v.job.stage, v.job.progress, v.job.seq = shown.stage, shown.progress, shown.seq


async def current(bus: Bus, views: V) -> V:
    """``views`` as they stand now. Without Redis, the rows as stored: consistent with an
    event pushed earlier, and what clients resync from once Redis is back."""
    ids = running(views)
    if ids:
        try:
            lay_over(views, await bus.live_states(ids))
        except redis.RedisError as exc:
            log.warning("running jobs shown as stored: %s", exc)
    return views


async def current_batch(bus: Bus, found: BatchProgress | None) -> BatchProgress | None:
    """The batch with its running jobs' live progress (``current``'s rule)."""
    if found is None or not (ids := found.running()):
        return found
    try:
        return found.with_live(await bus.live_states(ids))
    except redis.RedisError as exc:
        log.warning("batch counted as stored: %s", exc)
        return found


def current_batch_sync(bus: SyncBus, found: BatchProgress | None) -> BatchProgress | None:
    """``current_batch`` in a worker thread."""
    if found is None or not (ids := found.running()):
        return found
    try:
        return found.with_live(bus.live_states(ids))
    except redis.RedisError as exc:
        log.warning("batch counted as stored: %s", exc)
        return found
