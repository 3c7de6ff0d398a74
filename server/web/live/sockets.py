"""The Socket.IO namespace: authenticated connect, the snapshot, subscribe and unsubscribe;
and the upkeep that closes revoked and vanished sockets."""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any

import redis
import socketio
import sqlalchemy.exc
from socketio.exceptions import ConnectionRefusedError as Refused

from server.core.events import (
    ADMINS_ROOM,
    JOB_ROOM_PREFIX,
    SNAPSHOT,
    USER_ROOM_PREFIX,
    TokenRevoked,
    job_room,
    snapshot_payload,
    token_room,
    user_room,
)
from server.core.lifecycle import snapshot_since
from server.core.principal import Principal
from server.data import store
from server.data.models import utcnow
from server.infra import logs
from server.infra.audit import audit, audit_foreign
from server.services import live_views
from server.web.http.auth import authenticate
from server.web.live.connections import Connections
from server.web.live.socket_limits import HandshakeTimeouts, TokenBucket
from server.web.state import AppState

log = logging.getLogger(__name__)


def _token_from(auth: Any, environ: dict[str, Any]) -> str | None:
    """The token from the ``auth`` payload, else from an ``Authorization: Bearer`` header."""
    if isinstance(auth, dict) and isinstance(auth.get("token"), str) and auth["token"]:
        return str(auth["token"])
    header = str(environ.get("HTTP_AUTHORIZATION", ""))
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


async def send_snapshot(state: AppState, user_id: str, to: str) -> None:
    """``jobs:snapshot`` of one user's jobs, to a socket or a room."""
    views = await state.db.read(store.snapshot_jobs, user_id=user_id,
                                finished_since=snapshot_since(utcnow()))
    await live_views.current(state.bus, [v for v, _ in views])
    jobs = [state.presenter.job(v.job, v.image, position) for v, position in views]
    await state.sio.emit(SNAPSHOT, snapshot_payload(jobs), to=to)


async def resync_all(state: AppState) -> None:
    """After a gap in the bus: close sockets of tokens revoked meanwhile, and send a fresh
    snapshot to every user connected to this process."""
    await close_revoked(state)
    rooms = list(state.sio.manager.rooms.get("/", {}))
    for room in rooms:
        if isinstance(room, str) and room.startswith(USER_ROOM_PREFIX):
            await send_snapshot(state, room.removeprefix(USER_ROOM_PREFIX), to=room)


# Sockets looked at per step of the upkeep, between which the event loop relays events.
_UPKEEP_BATCH = 200


def _refusal(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"ok": False, "error": {"code": code, "message": message, **extra}}


def _alive(sio: socketio.AsyncServer, sid: str) -> bool:
    """Connected in Socket.IO and still backed by an Engine.IO connection."""
    if not sio.manager.is_connected(sid, "/"):
        return False
    eio_sid = sio.manager.eio_sid_from_sid(sid, "/")
    return eio_sid is not None and eio_sid in sio.eio.sockets


async def close_revoked(state: AppState) -> int:
    """Close this process's sockets whose token was revoked; how many were closed.

    ``DELETE /api/session`` announces each revocation on the bus, but pub/sub keeps
    nothing: a web process that missed it (Redis away, a socket connecting as the token
    was revoked) finds out here, on its next round.
    """
    sio, connections = state.sio, state.connections
    held = dict(connections.tokens)
    if not held:
        return 0
    ids = sorted(set(held.values()))
    valid: set[str] = set()
    for start in range(0, len(ids), _UPKEEP_BATCH):
        # In batches: the query's rows are built on the event loop, which relays events.
        valid |= await state.db.read(store.existing_token_ids,
                                     token_ids=set(ids[start:start + _UPKEEP_BATCH]))
    closed = 0
    for sid, token_id in held.items():
        if token_id not in valid:
            state.tokens.forget(token_id)
            event = TokenRevoked(token_id=token_id)
            await sio.emit(event.name, event.payload(), to=sid)
            await sio.disconnect(sid)
            connections.forget(sid)
            closed += 1
    return closed


async def tidy_sockets(state: AppState) -> None:
    """One round of upkeep: release sockets that vanished without a disconnect (a client
    gone while its connect was still running), close revoked ones, re-stamp the rest."""
    connections, registry = state.connections, state.sockets
    for n, sid in enumerate(registry.local_sids(), 1):
        if sid not in connections.connecting and not _alive(state.sio, sid):
            connections.forget(sid)
            await registry.release(sid)
        if n % _UPKEEP_BATCH == 0:
            await asyncio.sleep(0)  # let events through between batches
    await close_revoked(state)
    await registry.refresh()


async def keep_sockets(state: AppState) -> None:
    """Run ``tidy_sockets`` every SOCKET_REFRESH_S, forever (a lifespan task)."""
    while True:
        await asyncio.sleep(state.sockets.refresh_s)
        try:
            await tidy_sockets(state)
        except Exception as exc:  # Redis or the database away: try again next round
            log.warning("socket upkeep failed: %s", exc)


class LiveNamespace(socketio.AsyncNamespace):  # type: ignore[misc]
    """The ``/`` namespace; its handlers need the app state, given by ``serve`` once the
    lifespan has built it (the server refuses connections until then).

    An engine.io session that has not joined the namespace ``connect_timeout_s`` after its
    handshake, or after its connect was refused, is closed (SOCKET_CONNECT_TIMEOUT_S).
    """

    def __init__(self, sio: socketio.AsyncServer, connections: Connections, *,
                 connect_timeout_s: float) -> None:
        super().__init__("/")
        self.sio = sio
        self.connections = connections
        self._state: AppState | None = None
        self.timeouts = HandshakeTimeouts(sio, connect_timeout_s)
        # socketio's own engine.io connect handler (it keeps the environ), then the watch.
        self._eio_connect = sio.eio.handlers["connect"]
        sio.eio.on("connect", self._on_handshake)
        sio.register_namespace(self)

    def serve(self, state: AppState) -> None:
        """Answer with this state from now on (the lifespan calls it once it is built)."""
        self._state = state

    @property
    def state(self) -> AppState:
        if self._state is None:
            raise Refused("unavailable: the server is starting or stopping")
        return self._state

    async def _on_handshake(self, eio_sid: str, environ: dict[str, Any]) -> Any:
        result = await self._eio_connect(eio_sid, environ)
        self.timeouts.watch(eio_sid)
        return result

    def _watch_engine(self, sid: str) -> None:
        """Close the socket's engine.io session unless it joins again in time."""
        eio_sid = self.sio.manager.eio_sid_from_sid(sid, "/")
        if eio_sid is not None:
            self.timeouts.watch(eio_sid)

    async def on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        try:
            await self._admit(sid, environ, auth)
        except Refused:
            # The namespace is left at once; the engine.io session would stay open until
            # the client leaves or its ping times out.
            self._watch_engine(sid)
            raise

    async def _admit(self, sid: str, environ: dict[str, Any], auth: Any) -> None:
        state, connections = self.state, self.connections
        token = _token_from(auth, environ)
        if token is None:
            raise Refused("unauthorized: missing token (connect with auth: {token})")
        try:
            principal = await authenticate(state.db, token, state.settings.admin_token,
                                           state.tokens)
        except Exception:
            log.exception("socket authentication failed")
            raise Refused("unavailable: cannot check the token right now") from None
        if principal is None:
            raise Refused("unauthorized: invalid token")
        registry = state.sockets
        connections.connecting.add(sid)
        try:
            claimed = await registry.claim(principal.user_id, sid)
        except (redis.RedisError, OSError) as exc:
            connections.connecting.discard(sid)
            log.warning("socket registry unavailable: %s", exc)
            raise Refused("unavailable: cannot count connections right now") from None
        if not claimed:
            connections.connecting.discard(sid)
            raise Refused(f"too_many_sockets: at most {registry.limit} live connections per "
                          "user; close another tab or client first")
        logs.bind(user_id=principal.user_id)  # for the rest of this socket's handling
        try:
            await self.save_session(sid, {"user_id": principal.user_id,
                                          "is_admin": principal.is_admin,
                                          "token_id": principal.token_id})
            connections.buckets[sid] = TokenBucket.full(state.settings.socket_event_burst,
                                                        state.settings.socket_events_per_s)
            connections.tokens[sid] = principal.token_id
            await self.enter_room(sid, token_room(principal.token_id))
            # Join first, then snapshot: an event racing the snapshot arrives twice at worst,
            # and clients drop the older copy by seq; none is lost.
            await self.enter_room(sid, user_room(principal.user_id))
            await send_snapshot(state, principal.user_id, to=sid)
        except BaseException:
            connections.forget(sid)
            await registry.release(sid)
            raise
        finally:
            connections.connecting.discard(sid)

    async def on_disconnect(self, sid: str, reason: Any = None) -> None:
        self._watch_engine(sid)  # left the namespace; engine.io may be open still
        self.connections.forget(sid)
        if self._state is None:
            return  # never served: nothing was claimed
        try:
            await self._state.sockets.release(sid)
        except (redis.RedisError, OSError) as exc:
            # Its entry expires by itself once this process stops refreshing it.
            log.warning("could not release socket %s: %s", sid, exc)

    def _throttled(self, sid: str) -> dict[str, Any] | None:
        """The rate_limited answer when this socket sends events too fast (no I/O at all)."""
        bucket = self.connections.buckets.get(sid)
        wait_s = bucket.take() if bucket is not None else 0.0
        if wait_s <= 0:
            return None
        return _refusal("rate_limited", "too many requests on this connection; slow down",
                        retry_after_ms=math.ceil(wait_s * 1000))

    async def on_subscribe(self, sid: str, data: Any = None) -> dict[str, Any]:
        refused = self._throttled(sid)
        if refused is not None:
            return refused
        state = self.state
        session = await self.get_session(sid)
        logs.bind(user_id=session["user_id"])  # this event's task
        caller = Principal(session["user_id"], session["is_admin"], session["token_id"])
        if isinstance(data, dict) and data.get("scope") == "all":
            # The admin dashboard: every job's events, whoever owns the job.
            if not caller.is_admin:
                return _refusal("forbidden", "admin token required")
            await self.enter_room(sid, ADMINS_ROOM)
            audit(caller.user_id, "events.subscribe_all", "jobs of all users")
            return {"ok": True, "scope": "all"}
        job_id = data.get("job_id") if isinstance(data, dict) else None
        if not isinstance(job_id, str) or not job_id or len(job_id) > 64:
            return _refusal("bad_request", "send {\"job_id\": \"<id>\"}")
        followed = state.settings.max_followed_jobs_per_socket
        if caller.is_admin and _job_rooms(self.sio, sid) >= followed:
            return _refusal("too_many_subscriptions",
                            f"at most {followed} followed jobs per connection; "
                            "unsubscribe from some first")
        try:
            found = await state.db.read(store.get_job_positioned, job_id=job_id,
                                        user_id=caller.owner)
        except sqlalchemy.exc.DataError:  # PostgreSQL refuses some text, e.g. a NUL
            return _refusal("bad_request", "that is not a job id")
        if found is None:
            return _refusal("not_found", "job not found")
        view, position = found
        await live_views.current(state.bus, [view])
        if view.job.user_id != caller.user_id:
            # Admins following someone else's job get its events through the job's room.
            await self.enter_room(sid, job_room(job_id))
            audit_foreign(caller, view.job.user_id, "job.subscribe", f"job:{job_id}")
        return {"ok": True, "job": state.presenter.job(view.job, view.image, position)}

    async def on_unsubscribe(self, sid: str, data: Any = None) -> dict[str, Any]:
        refused = self._throttled(sid)
        if refused is not None:
            return refused
        job_id = data.get("job_id") if isinstance(data, dict) else None
        if isinstance(job_id, str):
            await self.leave_room(sid, job_room(job_id))
        return {"ok": True}


def _job_rooms(sio: socketio.AsyncServer, sid: str) -> int:
    """How many job rooms the socket is in."""
    return sum(1 for room in sio.rooms(sid) if str(room).startswith(JOB_ROOM_PREFIX))
