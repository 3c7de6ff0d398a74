"""Operations: health check, and the web client's files."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import redis
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from server import keys, metrics, store, telemetry
from server.jobs import queue_family
from server.routes.queues import queue_names, queue_report

log = logging.getLogger(__name__)

WEB_DIR = Path(__file__).resolve().parents[2] / "web"
# A health check that hangs is worse than one that says "down".
_CHECK_TIMEOUT_S = 2.0


async def _check(probe: Any) -> str:
    try:
        await asyncio.wait_for(probe(), timeout=_CHECK_TIMEOUT_S)
    except Exception as exc:  # any failure means "down"; the reason is reported
        return f"error: {type(exc).__name__}"
    return "ok"


async def healthz(request: Request) -> JSONResponse:
    state = request.app.state
    redis_status, db_status = await asyncio.gather(_check(state.redis.ping), _check(state.db.ping))
    relay_status = "stopped" if state.relay.done() else "ok"
    healthy = redis_status == db_status == relay_status == "ok"
    body = {"status": "ok" if healthy else "unavailable", "redis": redis_status,
            "database": db_status, "relay": relay_status}
    return JSONResponse(body, status_code=200 if healthy else 503)


async def prometheus(request: Request) -> Response:
    """Prometheus text format, deployment-wide whichever web process answers: jobs by
    queue, type and state, waits, throughput, workers, DLQ, Dramatiq queue depths,
    sockets, uploads, stage and run durations, relay delay."""
    state = request.app.state
    prefix = state.settings.redis_prefix
    dead = await state.db.read(store.dead_letter_count)
    by_type = await state.db.read(store.job_counts_by_type, types=list(state.task_types))
    try:
        # This process's own figures first, so a scrape sees them at once (the others'
        # are at most a report interval old).
        await telemetry.flush(state.redis, prefix, state.tally)
        await telemetry.report_sockets(state.redis, prefix, telemetry.process_name(),
                                       *state.socket_counts())
        queues = [name for base in queue_names(state) for name in queue_family(base)]
        scrape = metrics.Scrape(
            report=await queue_report(state), dead_letters=dead, jobs_by_type=by_type,
            queue_messages=await telemetry.read_queue_messages(
                state.redis, keys.dramatiq_namespace(prefix), queues),
            sockets=await telemetry.read_sockets(state.redis, prefix),
            samples=await telemetry.read_samples(state.redis, prefix),
        )
    except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
        # Exactly when something is wrong the database's figures matter most: show those.
        log.warning("metrics without Redis: %s", exc)
        scrape = metrics.Scrape(report=await queue_report(state, with_redis=False),
                                dead_letters=dead, jobs_by_type=by_type, redis_up=False)
    return Response(metrics.render(scrape), media_type=metrics.CONTENT_TYPE)


async def index(_request: Request) -> FileResponse:
    return FileResponse(WEB_DIR / "index.html", headers={"Cache-Control": "no-cache"})


async def admin(_request: Request) -> FileResponse:
    """The admin dashboard (it asks for the admin token itself)."""
    return FileResponse(WEB_DIR / "admin.html", headers={"Cache-Control": "no-cache"})


routes: list[Any] = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/metrics", prometheus, methods=["GET"]),
    Route("/", index, methods=["GET"]),
    Route("/admin", admin, methods=["GET"]),
    Mount("/static", app=StaticFiles(directory=WEB_DIR), name="static"),
]
