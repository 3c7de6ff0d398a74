"""The one loop that relays bus events to Socket.IO rooms."""

from __future__ import annotations

import logging

import socketio

from server.bus import Bus
from server.events import job_room, user_room

log = logging.getLogger(__name__)


async def relay_events(bus: Bus, sio: socketio.AsyncServer) -> None:
    """Forward each job event to its owner's room (and to admins following that job)."""
    async for event in bus.listen():
        try:
            await sio.emit(event.name, event.payload(),
                           room=[user_room(event.user_id), job_room(str(event.job["id"]))])
        except Exception:  # one bad emit must not stop the relay for everyone
            log.exception("failed to relay %s for job %s", event.name, event.job.get("id"))
