"""Socket.IO handlers: authenticated connect, the snapshot, and subscribe."""

from __future__ import annotations

import logging
from typing import Any

import socketio
from socketio.exceptions import ConnectionRefusedError as Refused

from server import logs, store
from server.auth import authenticate
from server.events import (
    ADMINS_ROOM,
    SNAPSHOT,
    USER_ROOM_PREFIX,
    job_room,
    snapshot_payload,
    user_room,
)

log = logging.getLogger(__name__)


def _token_from(auth: Any, environ: dict[str, Any]) -> str | None:
    """The token from the ``auth`` payload, else from an ``Authorization: Bearer`` header."""
    if isinstance(auth, dict) and isinstance(auth.get("token"), str) and auth["token"]:
        return str(auth["token"])
    header = str(environ.get("HTTP_AUTHORIZATION", ""))
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


async def send_snapshot(sio: socketio.AsyncServer, state: Any, user_id: str, to: str) -> None:
    """``jobs:snapshot`` of one user's jobs, to a socket or a room."""
    views = await state.db.read(store.snapshot_jobs, user_id=user_id,
                                finished_since=store.snapshot_window())
    jobs = [state.presenter.job(v.job, v.image, position) for v, position in views]
    await sio.emit(SNAPSHOT, snapshot_payload(jobs), to=to)


async def resync_all(sio: socketio.AsyncServer, state: Any) -> None:
    """A fresh snapshot to every user connected to this process."""
    rooms = list(sio.manager.rooms.get("/", {}))
    for room in rooms:
        if isinstance(room, str) and room.startswith(USER_ROOM_PREFIX):
            await send_snapshot(sio, state, room.removeprefix(USER_ROOM_PREFIX), to=room)


def socket_counts(sio: socketio.AsyncServer) -> tuple[int, int]:
    """Sockets connected to this process, and distinct users among them (their rooms)."""
    rooms = sio.manager.rooms.get("/", {})
    sockets = len(rooms.get(None, ()))
    users = sum(1 for room in rooms if isinstance(room, str) and room.startswith(USER_ROOM_PREFIX))
    return sockets, users


def register_handlers(sio: socketio.AsyncServer, state: Any) -> None:
    """Attach the handlers; ``state`` is the app state the lifespan fills in."""

    async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        token = _token_from(auth, environ)
        if token is None:
            raise Refused("unauthorized: missing token (connect with auth: {token})")
        try:
            principal = await authenticate(state.db, token, state.settings.admin_token)
        except Exception:
            log.exception("socket authentication failed")
            raise Refused("unavailable: cannot check the token right now") from None
        if principal is None:
            raise Refused("unauthorized: invalid token")
        logs.bind(user_id=principal.user_id)  # for the rest of this socket's handling
        await sio.save_session(sid, {"user_id": principal.user_id,
                                     "is_admin": principal.is_admin})
        # Join first, then snapshot: an event racing the snapshot arrives twice at worst,
        # and clients drop the older copy by seq; none is lost.
        await sio.enter_room(sid, user_room(principal.user_id))
        await send_snapshot(sio, state, principal.user_id, to=sid)

    async def subscribe(sid: str, data: Any = None) -> dict[str, Any]:
        session = await sio.get_session(sid)
        logs.bind(user_id=session["user_id"])  # this event's task
        if isinstance(data, dict) and data.get("scope") == "all":
            # The admin dashboard: every job's events, whoever owns the job.
            if not session["is_admin"]:
                return {"ok": False, "error": {"code": "forbidden",
                                               "message": "admin token required"}}
            await sio.enter_room(sid, ADMINS_ROOM)
            return {"ok": True, "scope": "all"}
        job_id = data.get("job_id") if isinstance(data, dict) else None
        if not isinstance(job_id, str) or not job_id:
            return {"ok": False, "error": {"code": "bad_request",
                                           "message": "send {\"job_id\": \"<id>\"}"}}
        owner = None if session["is_admin"] else session["user_id"]
        found = await state.db.read(store.get_job_positioned, job_id=job_id, user_id=owner)
        if found is None:
            return {"ok": False, "error": {"code": "not_found", "message": "job not found"}}
        view, position = found
        if view.job.user_id != session["user_id"]:
            # Admins following someone else's job get its events through the job's room.
            await sio.enter_room(sid, job_room(job_id))
        return {"ok": True, "job": state.presenter.job(view.job, view.image, position)}

    async def unsubscribe(sid: str, data: Any = None) -> dict[str, Any]:
        job_id = data.get("job_id") if isinstance(data, dict) else None
        if isinstance(job_id, str):
            await sio.leave_room(sid, job_room(job_id))
        return {"ok": True}

    for handler in (connect, subscribe, unsubscribe):
        sio.on(handler.__name__, handler)
