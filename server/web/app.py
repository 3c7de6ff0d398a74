"""create_app(): routes, lifespan and Socket.IO on one ASGI app."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import redis.asyncio as aioredis
import socketio
from starlette.applications import Starlette

from server.core import tasks as task_declarations
from server.core.token_cache import TokenCache
from server.data.db import Database
from server.infra import telemetry, tracing
from server.infra.broker import build_broker
from server.infra.bus import Bus
from server.infra.settings import Settings
from server.infra.storage import storage_for
from server.services import charts
from server.services.presenter import Presenter
from server.services.sent_marks import SentMarks
from server.web.http.error_handlers import EXCEPTION_HANDLERS
from server.web.http.request_ids import RequestIds
from server.web.http.routes import dlq, docs, images, jobs, ops, queues, session, tasks, webhooks
from server.web.http.security import http_middleware, socketio_origins
from server.web.http.spans import RequestSpans
from server.web.live.connections import Connections
from server.web.live.emitting import DirectManager, PacketJson
from server.web.live.relay import relay_events
from server.web.live.socket_limits import HandshakeRate, LimitedSocketApp, SocketRegistry
from server.web.live.sockets import LiveNamespace, keep_sockets, resync_all
from server.web.state import AppState
from server.web.sweeper import run_sweeper

log = logging.getLogger(__name__)
# How long shutdown waits for the background tasks it cancelled.
_TASK_STOP_TIMEOUT_S = 5.0


async def _stop(tasks: tuple[asyncio.Task[None], ...]) -> None:
    """Cancel the lifespan's background tasks and wait for them, a bounded time.

    A cancel can be eaten by a library (redis-py turns one that lands mid-connect into a
    ConnectionError, which a loop then treats as an outage and goes on): so the tasks
    still running are cancelled again every 0.1 s, and shutdown never waits forever."""
    pending = set(tasks)
    deadline = asyncio.get_running_loop().time() + _TASK_STOP_TIMEOUT_S
    while pending and asyncio.get_running_loop().time() < deadline:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=0.1)
    for task in pending:
        log.warning("background task %s did not stop; leaving it", task.get_name())


def create_app(settings: Settings) -> RequestIds:
    """The whole web process: REST API, web client and Socket.IO on one port."""
    settings.require_redis()
    # engine.io checks the Origin header of polling and WebSocket requests alike, and
    # closes a connection whose message is larger than max_http_buffer_size.
    sio = socketio.AsyncServer(async_mode="asgi", client_manager=DirectManager(),
                               json=PacketJson,
                               cors_allowed_origins=socketio_origins(settings),
                               max_http_buffer_size=settings.socket_max_message_bytes,
                               transports=list(settings.socketio_transports))

    connections = Connections()
    live = LiveNamespace(sio, connections, connect_timeout_s=settings.socket_connect_timeout_s)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if (warning := settings.multi_host_warning()) is not None:
            log.warning(warning)
        storage = storage_for(settings)
        await asyncio.to_thread(storage.ensure_dirs)
        db = Database(settings.database_url, tracer=tracing.tracer("server.data.db"))
        if settings.auto_migrate:
            await db.migrate()
        else:  # migrations run as a release step (`darkroom migrate`); refuse a stale schema
            await db.require_current_schema()
        # No read timeout: the relay's pub/sub connection sits idle between events
        # (health checks ping it); connecting fails fast so uploads get a quick 503.
        client = aioredis.Redis.from_url(settings.redis_url, socket_connect_timeout=5,
                                         health_check_interval=30)
        bus = Bus(client, settings.redis_prefix)
        state = AppState(
            settings=settings, db=db, redis=client, storage=storage,
            broker=build_broker(settings, maintenance=False),
            presenter=Presenter(settings.secret_key, settings.signed_url_ttl_s,
                                settings.public_url),
            bus=bus,
            task_types=task_declarations.declared(include_test_tasks=settings.enable_test_tasks),
            sent=SentMarks(), sio=sio, connections=connections,
            tokens=TokenCache(settings.auth_cache_s, settings.auth_cache_entries),
            sockets=SocketRegistry(client, settings.redis_prefix,
                                   settings.max_sockets_per_user, settings.socket_refresh_s))
        app.state.darkroom = state
        live.serve(state)
        relay = state.relay = asyncio.create_task(
            relay_events(bus, sio, resync=lambda: resync_all(state), moved=state.stats.poke,
                         tally=state.tally, tokens=state.tokens),
            name="relay")
        sweeper = asyncio.create_task(run_sweeper(state), name="sweeper")
        registry = asyncio.create_task(keep_sockets(state), name="socket-upkeep")
        marks = asyncio.create_task(state.sent.run(db), name="sent-marks")
        reporter = asyncio.create_task(
            telemetry.report_forever(client, settings.redis_prefix, state.tally,
                                     state.socket_counts),
            name="metrics")
        sampler = asyncio.create_task(charts.sample_forever(state), name="charts")
        try:
            yield
        finally:
            await _stop((relay, sweeper, registry, reporter, marks, sampler))
            await state.sockets.release_all()
            with contextlib.suppress(Exception):  # the sweeper resends what this misses
                await state.sent.flush(db)
            await state.stats.close()
            state.broker.close()
            await client.aclose()
            await db.dispose()
            # The spans still batched go now (tracing.configure is the entry point's).
            await asyncio.to_thread(tracing.shutdown)

    app = Starlette(
        routes=[*session.routes, *images.routes, *jobs.routes, *tasks.routes, *dlq.routes,
                *webhooks.routes, *queues.routes, *docs.routes, *ops.routes],
        lifespan=lifespan,
        exception_handlers=EXCEPTION_HANDLERS,
        middleware=http_middleware(settings),
    )
    # A span per request only when this process traces (server.__main__ configures it).
    http_app = RequestSpans(app) if tracing.enabled() else app
    return RequestIds(LimitedSocketApp(
        sio, http_app, handshakes=HandshakeRate(settings.socket_handshakes_per_min),
        trusted_proxies=settings.trusted_proxies, exempt=settings.rate_limit_exempt_addresses))
