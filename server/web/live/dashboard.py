"""Pushes queue statistics and the workers panel to admins watching the dashboard, at most
once a second, with the charts' newest point and the minute still running so far."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import socketio

from server.core.events import ADMINS_ROOM, CHART_POINT, QUEUE_STATS, WORKERS_STATS
from server.core.wire import responses as wire
from server.data.models import iso, utcnow
from server.services.charts import points, queue_depth, so_far
from server.services.context import Services
from server.services.presenter import builtins
from server.services.queues import queue_report
from server.services.workers import roster

log = logging.getLogger(__name__)

# Stats are a few COUNT queries per queue: once a second is live enough and cheap.
_INTERVAL_S = 1.0
# While admins watch and nothing moves, throughput and waiting ages still change.
_IDLE_REFRESH_S = 10.0
# The minute still running is pushed this often (while stats are pushed) so the charts
# move within the minute, not only when it ends.
_SO_FAR_EVERY_S = 5.0


class StatsPusher:
    """Coalesces job events into one ``queues:stats`` push per interval, when admins watch."""

    def __init__(self, sio: socketio.AsyncServer, state: Services) -> None:
        self.sio = sio
        self.state = state
        self._task: asyncio.Task[None] | None = None
        self._charted: str | None = None  # the newest chart point pushed
        self._so_far_at = 0.0  # when the minute so far was last pushed (monotonic)
        self._idle = asyncio.create_task(self._refresh_when_idle(), name="queues-stats-idle")

    async def _refresh_when_idle(self) -> None:
        while True:
            await asyncio.sleep(_IDLE_REFRESH_S)
            self.poke()

    def poke(self) -> None:
        """Something moved: push fresh stats soon (once, however many pokes come)."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._push_later(), name="queues-stats")

    async def _push_later(self) -> None:
        await asyncio.sleep(_INTERVAL_S)
        if not self.sio.manager.rooms.get("/", {}).get(ADMINS_ROOM):
            return
        try:
            report = await queue_report(self.state)
            at = iso(utcnow())
            await self.sio.emit(QUEUE_STATS, {**report, "at": at}, room=ADMINS_ROOM)
            found = builtins(wire.WorkerRoster(workers=await roster(self.state)))
            await self.sio.emit(WORKERS_STATS, {**found, "at": at}, room=ADMINS_ROOM)
            newest = await points(self.state, 1)
            if newest and newest[-1].at != self._charted:
                self._charted = newest[-1].at
                await self.sio.emit(CHART_POINT, builtins(newest[-1]), room=ADMINS_ROOM)
            if time.monotonic() - self._so_far_at >= _SO_FAR_EVERY_S:
                self._so_far_at = time.monotonic()
                running = await so_far(self.state, depth=queue_depth(report))
                if running is not None:
                    await self.sio.emit(CHART_POINT, builtins(running), room=ADMINS_ROOM)
        except Exception:
            log.exception("could not push queue statistics")

    async def close(self) -> None:
        for task in (self._task, self._idle):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
