"""This process's sockets: which token each connected with, each one's event allowance."""

from __future__ import annotations

import socketio

from server.core.events import USER_ROOM_PREFIX
from server.web.live.socket_limits import TokenBucket


class Connections:
    """This process's sockets: each one's token and allowance of client → server events."""

    def __init__(self) -> None:
        self.buckets: dict[str, TokenBucket] = {}
        self.tokens: dict[str, str] = {}  # sid → the id of the token it connected with
        self.connecting: set[str] = set()

    def forget(self, sid: str) -> None:
        self.buckets.pop(sid, None)
        self.tokens.pop(sid, None)


def socket_counts(sio: socketio.AsyncServer) -> tuple[int, int]:
    """Sockets connected to this process, and distinct users among them (their rooms)."""
    rooms = sio.manager.rooms.get("/", {})
    sockets = len(rooms.get(None, ()))
    users = sum(1 for room in rooms if isinstance(room, str) and room.startswith(USER_ROOM_PREFIX))
    return sockets, users
