"""Queues as a use case: which exist, which are paused, their figures, pausing one."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from server.core import keys
from server.core.jobs import Stage
from server.core.wire import responses as wire
from server.data import store
from server.services import dispatch
from server.services.context import Services
from server.services.presenter import builtins, queue_stats


def queue_names(state: Services) -> list[str]:
    """The base queues of the registered task types."""
    return sorted({task_type.queue for task_type in state.task_types.values()})


async def paused_queues(state: Services) -> set[str]:
    members = await state.redis.smembers(keys.paused_queues(state.settings.redis_prefix))
    return queue_names_of(members)


def queue_names_of(members: Iterable[bytes | str]) -> set[str]:
    """The queue names of the paused set's members, as Redis returns them."""
    return {m.decode() if isinstance(m, bytes) else str(m) for m in members}


def stage_for(base: str, paused: frozenset[str] | set[str]) -> str:
    """The stage a new job of queue ``base`` starts in, given the paused queues: paused
    while its queue is."""
    return Stage.PAUSED.value if base in paused else Stage.STORED.value


async def waiting_stage(state: Services, base: str) -> str:
    """``stage_for``, with the paused queues read now."""
    return stage_for(base, await paused_queues(state))


async def queue_report(state: Services) -> dict[str, Any]:
    """<QueueReport> as JSON values: every queue's counts, oldest wait, throughput and
    pause state, and live workers."""
    paused = await paused_queues(state)
    queues = []
    for name in queue_names(state):
        figures = await state.db.read(store.queue_stats, base=name)
        queues.append(wire.Queue(name=name, paused=name in paused, **queue_stats(figures)))
    return builtins(wire.QueueReport(queues=queues, workers=await live_workers(state)))


async def live_workers(state: Services) -> int:
    """Worker processes whose heartbeat is fresh (Dramatiq's heartbeat set)."""
    settings = state.settings
    key = keys.dramatiq_heartbeats(keys.dramatiq_namespace(settings.redis_prefix))
    since = time.time() * 1000 - settings.worker_heartbeat_timeout_ms
    return int(await state.redis.zcount(key, since, "+inf"))


async def set_paused(state: Services, name: str, paused: bool) -> None:
    """Pause or resume a base queue: waiting jobs stay queued, running ones finish."""
    key = keys.paused_queues(state.settings.redis_prefix)
    if paused:
        await state.redis.sadd(key, name)
    else:
        await state.redis.srem(key, name)
    # Owners see it: their waiting jobs' stage says "paused" (or waiting again).
    for view in await state.db.write(store.mark_paused, base=name, paused=paused):
        await dispatch.announce(state, view)
