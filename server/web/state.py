"""The web process's state: the use cases' ``Services`` and what only this process has."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import cast

import socketio
from starlette.requests import HTTPConnection

from server.core.events import BusEvent
from server.core.token_cache import TokenCache
from server.infra import metrics
from server.services import dispatch
from server.services.context import Services
from server.web.live.connections import Connections, socket_counts
from server.web.live.dashboard import StatsPusher
from server.web.live.socket_limits import SocketRegistry


@dataclass(kw_only=True, eq=False)
class AppState(Services):
    """Built by the lifespan (``server.web.app``); routes reach it with ``app_state``."""

    sio: socketio.AsyncServer
    # Sockets per user across web processes, and this process's own.
    sockets: SocketRegistry
    connections: Connections
    # Tokens this process checked lately (AUTH_CACHE_S): most requests skip their read.
    tokens: TokenCache
    # Uploads and relay delays, added to the deployment's metrics every few seconds.
    tally: metrics.Tally = field(default_factory=metrics.Tally)
    # The bus → Socket.IO relay, once the lifespan has started it (health reports it).
    relay: asyncio.Task[None] | None = None
    # The last count of finished jobs /metrics showed (recounted now and then).
    finished_counts: metrics.FinishedCounts | None = None
    stats: StatsPusher = field(init=False)

    def __post_init__(self) -> None:
        self.stats = StatsPusher(self.sio, self)

    async def publish(self, event: BusEvent) -> None:
        """Any event (a job's followed by its batch's summary); failures are logged."""
        await dispatch.publish(self, event)

    def socket_counts(self) -> tuple[int, int]:
        return socket_counts(self.sio)


def app_state(connection: HTTPConnection) -> AppState:
    """The state of the app serving this request."""
    return cast(AppState, connection.app.state.darkroom)
