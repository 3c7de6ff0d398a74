"""Queue control (admin): statistics, pause and resume, clean old finished jobs."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from server import dispatch, keys, store, validation
from server.audit import audit
from server.auth import require_admin
from server.errors import not_found
from server.jobs import Stage
from server.models import utcnow
from server.uploads import read_json

DEFAULT_CLEAN_AGE_S = 3600


def queue_names(state: Any) -> list[str]:
    """The base queues of the registered task types."""
    return sorted({task_type.queue for task_type in state.task_types.values()})


async def paused_queues(state: Any) -> set[str]:
    members = await state.redis.smembers(keys.paused_queues(state.settings.redis_prefix))
    return {m.decode() if isinstance(m, bytes) else str(m) for m in members}


async def waiting_stage(state: Any, base: str) -> str:
    """The stage a new job of that queue starts in: paused while its queue is."""
    return Stage.PAUSED.value if base in await paused_queues(state) else Stage.STORED.value


def _queue(request: Request) -> str:
    name = str(request.path_params["name"])
    if name not in queue_names(request.app.state):
        raise not_found("queue")
    return name


async def queue_report(state: Any, *, with_redis: bool = True) -> dict[str, Any]:
    """Every queue's counts, oldest wait, throughput and pause state, and live workers.

    ``with_redis=False`` (Redis is away): the database's figures, and None for the pause
    state and the workers, which only Redis knows.
    """
    paused = await paused_queues(state) if with_redis else None
    queues = []
    for name in queue_names(state):
        stats = await state.db.read(store.queue_stats, base=name)
        queues.append({"name": name, "paused": None if paused is None else name in paused,
                       **stats})
    return {"queues": queues, "workers": await live_workers(state) if with_redis else None}


async def live_workers(state: Any) -> int:
    """Worker processes whose heartbeat is fresh (Dramatiq's heartbeat set)."""
    settings = state.settings
    key = keys.dramatiq_heartbeats(keys.dramatiq_namespace(settings.redis_prefix))
    since = time.time() * 1000 - settings.worker_heartbeat_timeout_ms
    return int(await state.redis.zcount(key, since, "+inf"))


async def list_queues(request: Request) -> JSONResponse:
    admin = await require_admin(request)
    report = await queue_report(request.app.state)
    audit(admin.user_id, "queues.list", "queues")
    return JSONResponse(report)


async def _set_paused(request: Request, paused: bool) -> JSONResponse:
    admin = await require_admin(request)
    state = request.app.state
    name = _queue(request)
    key = keys.paused_queues(state.settings.redis_prefix)
    if paused:
        await state.redis.sadd(key, name)
    else:
        await state.redis.srem(key, name)
    # Owners see it: their waiting jobs' stage says "paused" (or waiting again).
    for view in await state.db.write(store.mark_paused, base=name, paused=paused):
        await dispatch.announce(state, view)
    state.stats.poke()  # every admin's page shows the switch
    audit(admin.user_id, "queue.pause" if paused else "queue.resume", f"queue:{name}")
    return JSONResponse({"name": name, "paused": paused})


async def pause(request: Request) -> JSONResponse:
    """Waiting jobs stay queued; running ones finish."""
    return await _set_paused(request, True)


async def resume(request: Request) -> JSONResponse:
    return await _set_paused(request, False)


async def clean(request: Request) -> JSONResponse:
    admin = await require_admin(request)
    state = request.app.state
    name = _queue(request)
    age_s = validation.clean_age(await read_json(request, empty={}),
                                 request.query_params.get("older_than_s"),
                                 default=DEFAULT_CLEAN_AGE_S,
                                 max_digits=state.settings.max_number_digits)
    removed = await state.db.write(store.clean_finished, base=name,
                                   finished_before=utcnow() - timedelta(seconds=age_s))
    audit(admin.user_id, "queue.clean", f"queue:{name}",
          f"{removed} removed, older than {age_s} s")
    return JSONResponse({"name": name, "removed": removed})


routes = [
    Route("/api/queues", list_queues, methods=["GET"]),
    Route("/api/queues/{name}/pause", pause, methods=["POST"]),
    Route("/api/queues/{name}/resume", resume, methods=["POST"]),
    Route("/api/queues/{name}/clean", clean, methods=["POST"]),
]
