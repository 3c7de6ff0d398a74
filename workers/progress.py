"""Report a job's state and progress: store it, then publish it."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from types import EllipsisType
from typing import Any, ParamSpec, Protocol, TypeVar

import redis
import sqlalchemy.exc

from server.core import keys, lifecycle
from server.core.events import PROGRESS, BusEvent
from server.core.jobs import JobState, TransitionError, base_queue, is_final
from server.core.live import PushedStep
from server.data import store
from server.data.db import Query, SyncDatabase
from server.data.models import Job, utcnow
from server.data.store import JobView
from server.infra.bus import PUSHED, RUN_OVER, SyncBus
from server.services import live_views, outcomes
from server.services.presenter import Presenter
from workers import handoff
from workers.faults import DatabaseUnavailable, JobCancelled, worker_name
from workers.middleware import timings

log = logging.getLogger(__name__)
T = TypeVar("T")
P = ParamSpec("P")

# How many waiting jobs get a fresh queue_position pushed each time a job starts: the
# ones a person is most likely watching, at a bounded cost per start.
POSITION_UPDATES = 10
# ...but at most once per LINE_REFRESH_MS per queue family, across all workers: when
# small jobs start dozens of times a second, refreshing ten positions at each start
# would cost ten writes and ten events per job. A refresh skipped at a start is caught up
# when a job of the family ends; GET /api/jobs/{id} always computes positions afresh.
LINE_REFRESH_MS = 150
# A busy SQLite or a PostgreSQL failover: a few quick tries before giving up.
_WRITE_TRIES = 4
_WRITE_PAUSE_S = 0.25


class Reporter:
    """The one way workers change a job: a short DB write, then an event on the bus."""

    def __init__(self, db: SyncDatabase, bus: SyncBus, presenter: Presenter,
                 send: Callable[[Job], object], line: LineRefresh | None = None) -> None:
        self.db = db
        self.bus = bus
        self.presenter = presenter
        self.send = send
        self.line = line or _Unthrottled()

    def _write(self, fn: Query[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """``db.write``, tried again a few times while the database is busy or away."""
        for attempt in range(1, _WRITE_TRIES + 1):
            try:
                return self.db.write(fn, *args, **kwargs)
            except sqlalchemy.exc.OperationalError:
                if attempt == _WRITE_TRIES:
                    raise
                time.sleep(_WRITE_PAUSE_S * attempt)
        raise AssertionError("unreachable")

    def _run(self, plan: outcomes.Plan[T]) -> T:
        return outcomes.run(plan, _Ports(self))

    def _publish(self, view: JobView, name: str | None = None,
                 position: int | EllipsisType = ...) -> None:
        self._run(outcomes.announce(self.presenter, view, name=name, position=position))

    def _change(self, change: Callable[..., JobView | None], job_id: str,
                **fields: Any) -> JobView | None:
        """A state change by this thread's run (``store.transition``, ``dead_letter``), with
        the webhook deliveries an end queues and the steps the run pushed from Redis alone
        kept in the timeline, then told; None if the job is gone."""
        steps = _pushed(job_id)
        try:
            view, deliveries = self._write(store.end_with_deliveries, change=change,
                                           webhook=self.presenter.webhook, job_id=job_id,
                                           pushed=steps, **fields)
        except TransitionError:
            self._keep_steps(job_id)  # the run is over: its steps still go to the timeline
            raise
        _kept(job_id, steps)
        if view is not None:
            self._run(outcomes.changed(self.presenter, view, deliveries))
        return view

    def transition(self, job_id: str, state: JobState, **fields: Any) -> JobView | None:
        """Move the job to ``state`` and tell its owner; None if the job is gone."""
        view = self._change(store.transition, job_id, state=state, **fields)
        if view is not None and is_final(state):
            # A refresh the throttle skipped at a start is caught up when a job of the
            # family ends, so pushed positions do not stay stale while work goes on.
            self._advance_line(view.job.queue, only_if_owed=True)
        return view

    def submit(self, view: JobView) -> None:
        """Announce a newly stored job and send its message.

        If Redis refuses, the job stays unsent and the web's sweeper sends it later.
        """
        self._run(outcomes.submit(self.presenter, view))

    def begin_attempt(self, job_id: str, message_id: str) -> JobView | None:
        """Mark the job active (a new attempt); DatabaseUnavailable when that write could not
        be made, so nothing changed. What follows the write (events) cannot fail it."""
        try:
            view = self._write(store.begin_attempt, job_id=job_id, message_id=message_id,
                               worker=worker_name())
        except sqlalchemy.exc.OperationalError as exc:
            raise DatabaseUnavailable(str(exc)) from exc
        if view is not None:
            self._publish(view)
            self._advance_line(view.job.queue)
        return view

    def _advance_line(self, queue: str, *, only_if_owed: bool = False) -> None:
        """A job left the line: the first ones still waiting learn their new position."""
        try:
            if only_if_owed and not self.line.owed(queue):
                return
            if not self.line.claim(queue):
                return
            front = self.db.read(store.line_front, queue=queue, limit=POSITION_UPDATES)
            if not front:
                return  # nobody to tell (a write would only wait for the write turn)
            waiting = self._write(store.advance_line, ids=front)
        except (sqlalchemy.exc.OperationalError, redis.RedisError) as exc:
            log.warning("queue positions not updated: %s", exc)  # shown again on next event
            return
        for waiting_view, position in waiting:
            self._publish(waiting_view, position=position)

    def dead_letter(self, job_id: str, error: dict[str, Any], *, traceback: str | None,
                    of_attempt: int | None = None,
                    stage_times: list[tuple[str, float]] | None = None) -> JobView | None:
        """Fail the job for good, record it in the dead-letter queue, push ``job:failed``."""
        return self._change(store.dead_letter, job_id, error=error, traceback=traceback,
                            of_attempt=of_attempt, stage_times=stage_times)

    def show_paused(self, job_id: str) -> None:
        """Tell the owner their waiting job is held by a paused queue (once)."""
        view = self._write(store.show_paused, job_id=job_id)
        if view is not None:
            self._publish(view)

    def progress(self, job_id: str, stage: str, progress: int, *, image_id: str | None = None,
                 **outputs: Any) -> int:
        """Report the start of ``stage``; raises JobCancelled when the job is no longer
        active (or another attempt than this thread's runs it). Returns the job's ``seq``
        after this report.

        A step of the attempt this thread runs is pushed from Redis alone
        (``server.core.live``); the database keeps it with the attempt's next write. The
        database takes the step itself when there is no live state to push onto (Redis
        restarted, say), when the attempt used up its block of seqs, or when ``outputs``
        (what the stage before produced, stored on image ``image_id``) must be stored now
        (ImageDeleted if that image is gone)."""
        timings.stage_entered(stage)
        run = handoff.run_of(job_id)
        if run is not None and not outputs:
            seq = self._push(run, stage, progress)
            if seq is not None:
                return seq
        view = self._write(store.report_progress, job_id=job_id, stage=stage, progress=progress,
                           image_id=image_id, outputs=outputs or None,
                           of_attempt=handoff.attempt_of(job_id), pushed=_pushed(job_id))
        if view is None:
            self._keep_steps(job_id)
            raise JobCancelled("the job was cancelled, or a later attempt took it over")
        if run is not None:
            run.written(view)
        self._publish(view, PROGRESS)
        return view.job.seq

    def _keep_steps(self, job_id: str) -> None:
        """The run is over without a write of its own (a cancel or a later attempt came
        first): the steps it pushed still go to the job's timeline (best effort)."""
        steps = _pushed(job_id)
        if not steps:
            return
        try:
            self._write(store.keep_pushed, job_id=job_id, steps=steps)
        except Exception as exc:  # best effort: the run's own outcome must go on
            log.warning("pushed steps not kept in the timeline: %s", exc)
            return
        _kept(job_id, steps)

    def _push(self, run: handoff.Run, stage: str, progress: int) -> int | None:
        """Push the step from Redis alone; its seq, or None to write it to the database
        instead. Raises JobCancelled when the job left this attempt."""
        seq = run.next_push()
        if seq is None:
            return None
        step = PushedStep(seq=seq, stage=stage,
                          progress=lifecycle.reported_progress(run.progress, progress),
                          at=utcnow())
        event = self.presenter.step(run.view, seq=step.seq, stage=step.stage,
                                    progress=step.progress)
        try:
            answer = self.bus.push(event, run.ceiling)
        except redis.RedisError as exc:
            log.warning("progress step goes to the database: %s", exc)
            return None
        if answer == RUN_OVER:
            self._keep_steps(run.view.job.id)
            raise JobCancelled("the job was cancelled, or a later attempt took it over")
        if answer != PUSHED:
            return None
        run.pushed_step(step)
        if event.job.get("batch_id"):
            self._run(outcomes.publish_batch(event))
        return seq


def _pushed(job_id: str) -> list[PushedStep]:
    """The steps this thread's attempt of the job pushed since its last write, for the
    next write to keep in the timeline. Only a write that commits keeps them (``_kept``);
    should the attempt end without one (its worker killed, say), the timeline lacks them,
    never the job's row or its events."""
    run = handoff.run_of(job_id)
    return list(run.pushed) if run is not None else []


def _kept(job_id: str, steps: list[PushedStep]) -> None:
    """A write that kept ``steps`` committed."""
    run = handoff.run_of(job_id)
    if run is not None and steps:
        run.kept(steps)


class _Ports:
    """The outcomes' steps in a worker (``outcomes.Ports``, synchronously)."""

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter

    def queue_position(self, job: Job) -> int | None:
        return self.reporter.db.read(store.queue_position, job=job)

    def batch_progress(self, batch_id: str) -> store.BatchProgress | None:
        return live_views.current_batch_sync(self.reporter.bus, self.reporter.db.read(
            store.batch_progress, batch_id=batch_id, user_id=None))

    def publish(self, event: BusEvent) -> None:
        self.reporter.bus.publish(event)

    def send(self, job: Job) -> None:
        self.reporter.send(job)

    def note_sent(self, job: Job) -> None:
        assert job.message_id is not None
        self.reporter._write(store.mark_enqueued, job_id=job.id, message_id=job.message_id)


class LineRefresh(Protocol):
    """When a queue family's waiting positions may be refreshed."""

    def claim(self, queue: str) -> bool:
        """May refresh now; when not, the refresh is owed."""

    def owed(self, queue: str) -> bool:
        """Take the note that a refresh was skipped (True once per skip)."""


class _Unthrottled:
    def claim(self, queue: str) -> bool:
        return True

    def owed(self, queue: str) -> bool:
        return False


class RedisLineRefresh:
    """One refresh per queue family and LINE_REFRESH_MS across all workers, the skipped
    ones noted in Redis so that the next job end of the family catches up."""

    def __init__(self, client: redis.Redis, prefix: str,
                 interval_ms: int = LINE_REFRESH_MS) -> None:
        self.client, self.prefix, self.interval_ms = client, prefix, interval_ms

    def claim(self, queue: str) -> bool:
        family = base_queue(queue)
        if self.client.set(keys.line_refresh(self.prefix, family), b"1", nx=True,
                           px=self.interval_ms):
            return True
        self.client.set(keys.line_refresh_owed(self.prefix, family), b"1", ex=3600)
        return False

    def owed(self, queue: str) -> bool:
        key = keys.line_refresh_owed(self.prefix, base_queue(queue))
        return bool(self.client.delete(key))
