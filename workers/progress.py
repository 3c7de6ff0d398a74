"""Report a job's state and progress: store it, then publish it."""

from __future__ import annotations

import logging
from typing import Any

import redis

from server import store
from server.bus import SyncBus
from server.db import SyncDatabase
from server.events import PROGRESS
from server.jobs import STAGE_PROGRESS, JobState, Stage
from server.schemas import Presenter
from server.store import JobView

log = logging.getLogger(__name__)


class Reporter:
    """The one way workers change a job: a short DB write, then an event on the bus."""

    def __init__(self, db: SyncDatabase, bus: SyncBus, presenter: Presenter) -> None:
        self.db = db
        self.bus = bus
        self.presenter = presenter

    def _publish(self, view: JobView, name: str | None = None) -> None:
        try:
            self.bus.publish(self.presenter.event(view, name=name))
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            # The row is the truth; clients resync from jobs:snapshot when they reconnect.
            log.warning("could not publish event for job %s: %s", view.job.id, exc)

    def transition(self, job_id: str, state: JobState, **fields: Any) -> JobView | None:
        """Move the job to ``state`` and tell its owner; None if the job is gone."""
        view = self.db.write(store.transition, job_id=job_id, state=state, **fields)
        if view is not None:
            self._publish(view)
        return view

    def progress(self, job_id: str, stage: Stage) -> bool:
        """Report the start of ``stage``; False when the job is no longer active."""
        view = self.db.write(store.report_progress, job_id=job_id, stage=stage.value,
                             progress=STAGE_PROGRESS[stage])
        if view is None:
            return False
        self._publish(view, PROGRESS)
        return True
