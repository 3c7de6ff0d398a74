"""Operations: health check, and the web client's files."""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from typing import Any, Literal

import redis
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from server.core import keys
from server.core.errors import ApiError, Problem
from server.core.jobs import queue_family
from server.core.queue_figures import THROUGHPUT_WINDOW
from server.core.wire import responses as wire
from server.data import store
from server.data.models import utcnow
from server.infra import exposition, metrics, telemetry
from server.services.presenter import builtins
from server.services.queues import live_workers, paused_queues, queue_names
from server.web.client_files import WEB_DIR
from server.web.http.auth import authenticate, bearer_token
from server.web.state import AppState, app_state

log = logging.getLogger(__name__)

# A health check that hangs is worse than one that says "down".
_CHECK_TIMEOUT_S = 2.0
# A scrape that finds no count while another process recounts waits this long for it
# (within Prometheus's default 10 s scrape timeout), looking every _RECOUNT_POLL_S.
_RECOUNT_WAIT_S = 5.0
_RECOUNT_POLL_S = 0.05


async def _check(probe: Any) -> str:
    try:
        await asyncio.wait_for(probe(), timeout=_CHECK_TIMEOUT_S)
    except Exception as exc:  # any failure means "down"; the reason is reported
        return f"error: {type(exc).__name__}"
    return "ok"


async def healthz(request: Request) -> JSONResponse:
    state = app_state(request)
    redis_status, db_status = await asyncio.gather(_check(state.redis.ping), _check(state.db.ping))
    relay_status: Literal["ok", "stopped"] = (
        "ok" if state.relay is not None and not state.relay.done() else "stopped")
    healthy = redis_status == db_status == relay_status == "ok"
    body = wire.Health(status="ok" if healthy else "unavailable", redis=redis_status,
                       database=db_status, relay=relay_status)
    return JSONResponse(builtins(body), status_code=200 if healthy else 503)


async def _require_scrape_access(request: Request) -> None:
    """With METRICS_TOKEN set, a scrape needs it, or an admin token, as its bearer token."""
    state = app_state(request)
    wanted = state.settings.metrics_token
    if not wanted:
        return
    token = bearer_token(request)
    if token is not None and hmac.compare_digest(token.encode(), wanted.encode()):
        return
    principal = await authenticate(state.db, token, state.settings.admin_token,
                                   state.tokens)
    if principal is not None and principal.is_admin:
        return
    if principal is not None:
        raise ApiError(Problem.FORBIDDEN, "forbidden",
                       "the metrics need METRICS_TOKEN or an admin token")
    raise ApiError(Problem.UNAUTHENTICATED, "unauthorized",
                   "missing bearer token" if token is None else "invalid bearer token")


async def _recount(state: AppState) -> metrics.FinishedCounts:
    """Count the finished jobs and dead letters now: a pass over every stored finished job."""
    window = THROUGHPUT_WINDOW
    rows, dead = await state.db.read(store.finished_job_counts, since=utcnow() - window)
    return metrics.count_finished(rows, dead, at=time.time(), window_s=window.total_seconds())


async def _counted_by_another(state: AppState) -> metrics.FinishedCounts | None:
    """The count the holder of the recount claim stores, once it has (None if it has not
    within _RECOUNT_WAIT_S: it may have died; the caller then counts)."""
    key = keys.metrics_finished(state.settings.redis_prefix)
    deadline = time.monotonic() + _RECOUNT_WAIT_S
    while time.monotonic() < deadline:
        await asyncio.sleep(_RECOUNT_POLL_S)
        counted = metrics.FinishedCounts.decode(await state.redis.get(key))
        if counted is not None:
            return counted
    return None


async def _finished_counts(state: AppState, *, shared: bool) -> metrics.FinishedCounts:
    """The last count of finished jobs, recounted when older than METRICS_RECOUNT_S.

    ``shared``: through Redis, so that one web process recounts per interval for the whole
    deployment (whichever takes the claim) and every other scrape shows its count. Without
    Redis, each process keeps its own count, recounted as often at most.
    """
    interval = state.settings.metrics_recount_s
    mine = state.finished_counts
    if shared and interval > 0:
        prefix = state.settings.redis_prefix
        latest = metrics.FinishedCounts.decode(
            await state.redis.get(keys.metrics_finished(prefix)))
        if latest is not None and time.time() - latest.at < interval:
            state.finished_counts = latest
            return latest
        if not await state.redis.set(keys.metrics_recount(prefix), telemetry.process_name(),
                                     nx=True, ex=interval):
            # Another scrape is recounting: show the last count meanwhile, or, when there
            # is none (the first scrape, or none for a long while), wait for its count.
            shown = latest or mine or await _counted_by_another(state)
            if shown is not None:
                state.finished_counts = shown
                return shown
    elif not shared and mine is not None and time.time() - mine.at < interval:
        return mine
    # Ours to count: the count is stale or missing and we took the claim (or its holder
    # has not stored a count in time), or METRICS_RECOUNT_S is 0.
    counted = state.finished_counts = await _recount(state)
    if shared:
        await state.redis.set(keys.metrics_finished(state.settings.redis_prefix),
                              counted.encode(), ex=max(600, 10 * interval))
    return counted


async def prometheus(request: Request) -> Response:
    """Prometheus text format, deployment-wide whichever web process answers: jobs by
    queue, type and state, waits, throughput, workers, DLQ, Dramatiq queue depths,
    sockets, uploads, stage and run durations, relay delay.

    No query reads the whole jobs table: unfinished jobs are counted through the state
    index on every scrape, finished ones at most once per METRICS_RECOUNT_S
    (``_finished_counts``).
    """
    await _require_scrape_access(request)
    state = app_state(request)
    prefix = state.settings.redis_prefix
    now = utcnow()
    unfinished, oldest = await state.db.read(
        lambda s: (store.unfinished_job_counts(s, now=now), store.oldest_waiting(s, now=now)))

    def figures(finished: metrics.FinishedCounts, paused: set[str] | None,
                workers: int | None) -> tuple[dict[str, Any], dict[tuple[str, str], int]]:
        return metrics.job_figures(bases=queue_names(state), types=list(state.task_types),
                                   unfinished=unfinished, oldest=oldest, finished=finished,
                                   now=now, paused=paused, workers=workers)

    try:
        # This process's own figures first, so a scrape sees them at once (the others'
        # are at most a report interval old).
        await telemetry.flush(state.redis, prefix, state.tally)
        await telemetry.report_sockets(state.redis, prefix, telemetry.process_name(),
                                       *state.socket_counts())
        finished = await _finished_counts(state, shared=True)
        report, by_type = figures(finished, await paused_queues(state),
                                  await live_workers(state))
        queues = [name for base in queue_names(state) for name in queue_family(base)]
        scrape = metrics.Scrape(
            report=report, dead_letters=finished.dead_letters, jobs_by_type=by_type,
            queue_messages=await telemetry.read_queue_messages(
                state.redis, keys.dramatiq_namespace(prefix), queues),
            sockets=await telemetry.read_sockets(state.redis, prefix),
            samples=await telemetry.read_samples(state.redis, prefix),
            recount_age_s=time.time() - finished.at,
        )
    except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
        # Exactly when something is wrong the database's figures matter most: show those.
        log.warning("metrics without Redis: %s", exc)
        finished = await _finished_counts(state, shared=False)
        report, by_type = figures(finished, None, None)
        scrape = metrics.Scrape(report=report, dead_letters=finished.dead_letters,
                                jobs_by_type=by_type, redis_up=False,
                                recount_age_s=time.time() - finished.at)
    return Response(exposition.render(scrape), media_type=exposition.CONTENT_TYPE)


async def index(_request: Request) -> FileResponse:
    return FileResponse(WEB_DIR / "index.html", headers={"Cache-Control": "no-cache"})


async def admin(_request: Request) -> FileResponse:
    """The admin dashboard (it asks for the admin token itself)."""
    return FileResponse(WEB_DIR / "admin.html", headers={"Cache-Control": "no-cache"})


async def admin_job(_request: Request) -> FileResponse:
    """One job's page: the same file for every id (its script reads the id from the
    address and checks it; it asks for the admin token as the dashboard does)."""
    return FileResponse(WEB_DIR / "admin-job.html", headers={"Cache-Control": "no-cache"})


routes: list[Any] = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/metrics", prometheus, methods=["GET"]),
    Route("/", index, methods=["GET"]),
    Route("/admin", admin, methods=["GET"]),
    Route("/admin/jobs/{job_id}", admin_job, methods=["GET"]),
    Mount("/static", app=StaticFiles(directory=WEB_DIR), name="static"),
]
