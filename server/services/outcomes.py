"""A job's state changed: announce it to its owner (then its batch's summary) and send the
webhook deliveries its end made. Written once for both processes.

The web process is asyncio and a worker is threads, so the use case is written as plans:
generators that yield the I/O they need as steps (read a position or a batch summary,
publish, send a message, note it sent) and receive each step's answer, or its error
thrown back at the ``yield``. ``run`` drives a plan through synchronous ports, ``run_async``
through asynchronous ones; what happens, in what order, and which failures are only
logged is decided here alone.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Generator, Sequence
from dataclasses import dataclass
from types import EllipsisType
from typing import Protocol, TypeVar, cast

import redis
import sqlalchemy.exc

from server.core.events import BatchEvent, BusEvent, JobEvent
from server.core.jobs import JobState
from server.data.models import Job
from server.data.store import BatchProgress, JobView
from server.services.presenter import Presenter, batch_summary

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)

# What makes an announcement fail without failing the change it announces: the bus or
# the database away for a moment. The row is the truth; clients resync from
# jobs:snapshot when they reconnect.
UNANNOUNCED = (redis.ConnectionError, redis.TimeoutError, sqlalchemy.exc.OperationalError)


@dataclass(frozen=True)
class ReadPosition:
    """Answered with the waiting job's queue position (``int | None``)."""

    job: Job


@dataclass(frozen=True)
class ReadBatch:
    """Answered with the batch's progress (``store.BatchProgress | None``)."""

    batch_id: str


@dataclass(frozen=True)
class Publish:
    event: BusEvent


@dataclass(frozen=True)
class Send:
    """Put the job's message on its queue (raises ``redis.RedisError``)."""

    job: Job


@dataclass(frozen=True)
class NoteSent:
    """Record that the job's message reached Redis, so the sweeper leaves it alone."""

    job: Job


Step = ReadPosition | ReadBatch | Publish | Send | NoteSent
Plan = Generator[Step, object, T]


class Ports(Protocol[R_co]):
    """What the steps do in a process: ``Ports[object]`` answers them at once, and
    ``Ports[Awaitable[object]]`` with awaitables (asyncio)."""

    def queue_position(self, job: Job) -> R_co: ...

    def batch_progress(self, batch_id: str) -> R_co: ...

    def publish(self, event: BusEvent) -> R_co: ...

    def send(self, job: Job) -> R_co: ...

    def note_sent(self, job: Job) -> R_co: ...


# -- the use case ------------------------------------------------------------------------------

def changed(presenter: Presenter, view: JobView, deliveries: Sequence[JobView] = (), *,
            position: int | EllipsisType | None = ...) -> Plan[JobEvent]:
    """The job's state changed: announce it, then submit the webhook deliveries its end
    made (``store.end_with_deliveries``); returns the job's event."""
    event = yield from announce(presenter, view, position=position)
    for delivery in deliveries:
        yield from submit(presenter, delivery)
    return event


def submit(presenter: Presenter, view: JobView) -> Plan[None]:
    """Announce a newly stored job and send its message.

    If Redis refuses, the job stays unsent and the web's sweeper sends it later."""
    yield from announce(presenter, view)
    try:
        yield Send(view.job)
    except redis.RedisError as exc:
        log.warning("job %s left for the sweeper: %s", view.job.id, exc,
                    extra={"job_id": view.job.id, "user_id": view.job.user_id})
        return
    yield NoteSent(view.job)


def announce(presenter: Presenter, view: JobView, *, name: str | None = None,
             position: int | EllipsisType | None = ...) -> Plan[JobEvent]:
    """Publish the job's current state to its owner (then its batch's summary); returns
    the job's event.

    ``position``: its queue position when the caller knows it already (else it is read,
    for a waiting job). Should that read fail, nothing is published and the event
    returned has no position."""
    if isinstance(position, EllipsisType):
        try:
            position = yield from _position(view.job)
        except UNANNOUNCED as exc:
            event = presenter.event(view, name=name)
            _not_published(event, exc)
            return event
    event = presenter.event(view, name=name, queue_position=position)
    yield from publish(event)
    return event


def publish(event: BusEvent) -> Plan[None]:
    """Publish an event; a job's is followed by its batch's summary. A failure is logged."""
    try:
        yield Publish(event)
    except UNANNOUNCED as exc:
        _not_published(event, exc)
        return
    yield from publish_batch(event)


def publish_batch(event: BusEvent) -> Plan[None]:
    """After a job's event has gone out: its batch's summary, if it has a batch. A failure
    is logged."""
    if not (isinstance(event, JobEvent) and event.job.get("batch_id")):
        return
    try:
        found = yield ReadBatch(event.job["batch_id"])
        if found is not None:
            yield Publish(BatchEvent(user_id=event.user_id,
                                     batch=batch_summary(cast(BatchProgress, found))))
    except UNANNOUNCED as exc:
        _not_published(event, exc)


def _position(job: Job) -> Plan[int | None]:
    if job.state != JobState.QUEUED.value:
        return None  # only a waiting job has one
    return cast("int | None", (yield ReadPosition(job)))


def _not_published(event: BusEvent, exc: Exception) -> None:
    if isinstance(event, JobEvent):
        log.warning("could not publish %s for job %s: %s", event.name, event.job.get("id"),
                    exc, extra={"job_id": event.job.get("id"), "user_id": event.user_id})
    else:
        log.warning("could not publish %s: %s", event.name, exc)


# -- the runners -------------------------------------------------------------------------------

def run(plan: Plan[T], ports: Ports[object]) -> T:
    """Carry out a plan with synchronous ports; returns what the plan returns."""
    answer: object = None
    error: Exception | None = None
    while True:
        try:
            step = plan.send(answer) if error is None else plan.throw(error)
        except StopIteration as done:
            return cast(T, done.value)
        try:
            answer, error = _do(step, ports), None
        except Exception as exc:  # the plan decides: handled there, or raised from here
            answer, error = None, exc


async def run_async(plan: Plan[T], ports: Ports[Awaitable[object]]) -> T:
    """Carry out a plan with asynchronous ports; returns what the plan returns."""
    answer: object = None
    error: Exception | None = None
    while True:
        try:
            step = plan.send(answer) if error is None else plan.throw(error)
        except StopIteration as done:
            return cast(T, done.value)
        try:
            answer, error = await _do(step, ports), None
        except Exception as exc:  # the plan decides: handled there, or raised from here
            answer, error = None, exc


def _do(step: Step, ports: Ports[R]) -> R:
    match step:
        case ReadPosition(job=job):
            return ports.queue_position(job)
        case ReadBatch(batch_id=batch_id):
            return ports.batch_progress(batch_id)
        case Publish(event=event):
            return ports.publish(event)
        case Send(job=job):
            return ports.send(job)
        case NoteSent(job=job):
            return ports.note_sent(job)
