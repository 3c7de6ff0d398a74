"""The one loop that relays bus events to Socket.IO rooms."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import socketio

from server.core.events import (
    ADMINS_ROOM,
    AdminEvent,
    BusEvent,
    JobEvent,
    TokenRevoked,
    job_room,
    token_room,
    user_room,
)
from server.core.token_cache import TokenCache
from server.infra import logs, metrics, tracing
from server.infra.bus import Bus

if TYPE_CHECKING:
    from opentelemetry.trace import Span

log = logging.getLogger(__name__)

# The relay gives the event loop a turn at least once per this many events.
TURN_EVERY = 16


async def disconnect_room(sio: socketio.AsyncServer, room: str, event: TokenRevoked) -> None:
    """Tell each socket in ``room`` why, then close it (clients do not reconnect by themselves
    after a server-side disconnect)."""
    sids = [sid for sid, _ in sio.manager.get_participants("/", room)]
    for sid in sids:
        await sio.emit(event.name, event.payload(), to=sid)
        await sio.disconnect(sid)


def _emit_span(event: BusEvent) -> contextlib.AbstractContextManager[Span | None]:
    """A span for relaying an event its publisher traced, in the publisher's trace."""
    if event.trace is None or not tracing.enabled():
        return contextlib.nullcontext()
    attributes: dict[str, str | int] = {"socketio.event": event.name}
    if isinstance(event, JobEvent):
        attributes["darkroom.job.id"] = str(event.job.get("id"))
    return tracing.span(f"socketio.emit {event.name}", kind="consumer", attributes=attributes,
                        parent=event.trace)


def _context(event: BusEvent) -> dict[str, str | None]:
    """Log fields naming what an event is about."""
    if isinstance(event, JobEvent):
        return {"user_id": event.user_id, "job_id": str(event.job.get("id"))}
    if isinstance(event, (AdminEvent, TokenRevoked)):
        return {}
    return {"user_id": event.user_id}


async def relay_events(bus: Bus, sio: socketio.AsyncServer,
                       resync: Callable[[], Awaitable[None]],
                       moved: Callable[[], None] = lambda: None,
                       tally: metrics.Tally | None = None,
                       tokens: TokenCache | None = None) -> None:
    """Forward each job event to its owner's room (and to admins following that job).

    After a gap in the bus (Redis was away) every connected user gets a fresh
    ``jobs:snapshot``, so no final state is missed by a socket that stayed connected.
    ``moved`` is called after each event (the dashboard's statistics follow it); the
    time from publish to emit goes into ``tally``. A revoked token leaves ``tokens`` (the
    process's token cache), and after a gap every token does: a revocation may be lost.
    """
    relayed = 0
    async for event in bus.listen():
        relayed += 1
        if relayed % TURN_EVERY == 0:
            # Events already read from Redis come without a wait, and emits no longer take
            # turns of the loop: in a burst, let the uploads and the sockets' writers run.
            await asyncio.sleep(0)
        if event is None:
            if tokens is not None:
                tokens.clear()
            try:
                await resync()
            except Exception:
                log.exception("failed to resync sockets after a gap in the bus")
            continue
        with logs.bound(**_context(event)), _emit_span(event) as span:
            try:
                if isinstance(event, TokenRevoked):
                    if tokens is not None:
                        tokens.forget(event.token_id)
                    await disconnect_room(sio, token_room(event.token_id), event)
                elif isinstance(event, AdminEvent):
                    await sio.emit(event.name, event.payload(), room=ADMINS_ROOM)
                else:
                    rooms = [user_room(event.user_id), ADMINS_ROOM]
                    if isinstance(event, JobEvent):
                        rooms.append(job_room(str(event.job["id"])))
                    await sio.emit(event.name, event.payload(), room=rooms)
                    moved()
                if tally is not None and event.published_at is not None:
                    tally.observe(metrics.RELAY_DELAY, time.time() - event.published_at)
            except Exception as exc:  # one bad emit must not stop the relay for everyone
                log.exception("failed to relay %s", event.name)
                tracing.fail(span, exc)
