"""Jobs whose message reached Redis, noted on their rows in batches (a web-process task)."""

from __future__ import annotations

import asyncio
import logging

from server.data import store
from server.data.db import Database
from server.data.models import Job

log = logging.getLogger(__name__)


class SentMarks:
    """Jobs whose message reached Redis, noted on their rows in one write every FLUSH_S.

    The note only keeps the sweeper from sending them again, and the sweeper looks at jobs
    left unsent for SWEEP_AFTER_S (a minute by default), so a fraction of a second's delay
    costs nothing, while an upload no longer waits for a second write of its own. Should a
    note be lost (the process died), the sweeper sends a fresh message and the first one
    is skipped: the job still runs once.
    """

    FLUSH_S = 0.25

    def __init__(self) -> None:
        self._pending: dict[str, str] = {}

    def add(self, job: Job) -> None:
        assert job.message_id is not None
        self._pending[job.id] = job.message_id

    async def flush(self, db: Database) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        try:
            await db.write(store.mark_enqueued_many, sent=pending)
        except BaseException:
            for job_id, message_id in pending.items():
                self._pending.setdefault(job_id, message_id)
            raise

    async def run(self, db: Database) -> None:
        """Flush every FLUSH_S, forever (a lifespan task)."""
        while True:
            await asyncio.sleep(self.FLUSH_S)
            try:
                await self.flush(db)
            except Exception as exc:  # the database is away: kept for the next round
                log.warning("could not note sent messages: %s", exc)
