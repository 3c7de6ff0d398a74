"""``server.services.outcomes``: what a job's change makes happen, in what order, and which
failures are only logged; driven through both runners (the worker's synchronous one and
the web's asyncio one) with recording ports, so both processes are held to the same plan.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
import redis
import sqlalchemy.exc

from server.core.events import BatchEvent, BusEvent, JobEvent
from server.data.models import Batch, Job
from server.data.store import BatchProgress, JobView
from server.data.store.batches import BatchJob
from server.services import outcomes
from server.services.presenter import Presenter, batch_summary

PRESENTER = Presenter("outcomes-secret", 3600)
WHEN = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
BATCH = BatchProgress(Batch(id="b1", user_id="u1", files=2, created_at=WHEN),
                      (BatchJob("j1", "completed", 1, 3, 100), BatchJob("j2", "queued", 0, 1, 0)))
DB_DOWN = sqlalchemy.exc.OperationalError("SELECT", {}, Exception("database is away"))


def view(job_id: str, state: str = "queued", *, batch_id: str | None = None,
         task_type: str = "image.process") -> JobView:
    job = Job(id=job_id, user_id="u1", type=task_type, queue="images", state=state,
              stage="stored", progress=0, attempt=0, max_attempts=3, priority="normal",
              payload={}, batch_id=batch_id, message_id=f"m-{job_id}", seq=4,
              created_at=WHEN)
    return JobView(job=job, image=None)


class Ports:
    """Records each step it is asked to do; ``fail`` makes a step raise, named by port
    (``"send"``) or by port and id (``"send:w1"``; an event's id is its job's)."""

    def __init__(self, fail: dict[str, Exception] | None = None) -> None:
        self.done: list[tuple[str, Any]] = []
        self.fail = fail or {}

    def _step(self, port: str, thing: Any, thing_id: str) -> None:
        self.done.append((port, thing))
        failure = self.fail.get(f"{port}:{thing_id}") or self.fail.get(port)
        if failure is not None:
            raise failure

    def queue_position(self, job: Job) -> int | None:
        self._step("queue_position", job.id, job.id)
        return 3

    def batch_progress(self, batch_id: str) -> BatchProgress | None:
        self._step("batch_progress", batch_id, batch_id)
        return BATCH if batch_id == "b1" else None

    def publish(self, event: BusEvent) -> None:
        self._step("publish", event, event.job["id"] if isinstance(event, JobEvent) else "")

    def send(self, job: Job) -> None:
        self._step("send", job.id, job.id)

    def note_sent(self, job: Job) -> None:
        self._step("note_sent", job.id, job.id)


class AsyncPorts:
    """The same ports, awaited (as the web process's are)."""

    def __init__(self, ports: Ports) -> None:
        self.ports = ports

    async def queue_position(self, job: Job) -> int | None:
        return self.ports.queue_position(job)

    async def batch_progress(self, batch_id: str) -> BatchProgress | None:
        return self.ports.batch_progress(batch_id)

    async def publish(self, event: BusEvent) -> None:
        self.ports.publish(event)

    async def send(self, job: Job) -> None:
        self.ports.send(job)

    async def note_sent(self, job: Job) -> None:
        self.ports.note_sent(job)


Drive = Callable[[outcomes.Plan[Any], Ports], Awaitable[Any]]


@pytest.fixture(params=["sync", "async"])
def drive(request: pytest.FixtureRequest) -> Drive:
    """Run a plan with the worker's runner or the web's: every test holds for both."""
    async def sync(plan: outcomes.Plan[Any], ports: Ports) -> Any:
        return outcomes.run(plan, ports)

    async def asynchronous(plan: outcomes.Plan[Any], ports: Ports) -> Any:
        return await outcomes.run_async(plan, AsyncPorts(ports))

    return sync if request.param == "sync" else asynchronous


def names(ports: Ports) -> list[tuple[str, Any]]:
    """The steps done, events shown by name and job (or batch) id."""
    def about(thing: Any) -> Any:
        if isinstance(thing, JobEvent):
            return (thing.name, thing.job["id"])
        if isinstance(thing, BatchEvent):
            return (thing.name, thing.batch["id"])
        return thing
    return [(port, about(thing)) for port, thing in ports.done]


async def test_a_change_is_announced_then_each_delivery_sent_and_noted(drive: Drive) -> None:
    """The ended job's event first (no position read: it is not waiting), then for each
    delivery: its position read, its ``job:queued`` event, its message sent and noted."""
    ended = view("j1", "cancelled")
    hooks = [view("w1", task_type="webhook.deliver"), view("w2", task_type="webhook.deliver")]
    ports = Ports()

    event = await drive(outcomes.changed(PRESENTER, ended, hooks), ports)

    assert names(ports) == [
        ("publish", ("job:cancelled", "j1")),
        ("queue_position", "w1"), ("publish", ("job:queued", "w1")),
        ("send", "w1"), ("note_sent", "w1"),
        ("queue_position", "w2"), ("publish", ("job:queued", "w2")),
        ("send", "w2"), ("note_sent", "w2")]
    assert event == ports.done[0][1] == PRESENTER.event(ended)
    assert event.seq == 4
    assert ports.done[2][1].job["queue_position"] == 3


async def test_a_batch_jobs_event_is_followed_by_its_batch_summary(drive: Drive) -> None:
    ports = Ports()
    event = await drive(outcomes.announce(PRESENTER, view("j1", "active", batch_id="b1")),
                        ports)
    assert names(ports) == [("publish", ("job:active", "j1")), ("batch_progress", "b1"),
                            ("publish", ("batch:progress", "b1"))]
    assert ports.done[2][1] == BatchEvent(user_id="u1", batch=batch_summary(BATCH))
    assert event.name == "job:active"


async def test_a_batch_gone_is_not_summarised(drive: Drive) -> None:
    ports = Ports()
    await drive(outcomes.announce(PRESENTER, view("j1", "active", batch_id="gone")), ports)
    assert names(ports) == [("publish", ("job:active", "j1")), ("batch_progress", "gone")]


async def test_a_given_position_is_not_read(drive: Drive) -> None:
    ports = Ports()
    event = await drive(outcomes.announce(PRESENTER, view("j1"), position=7, name="job:x"),
                        ports)
    assert names(ports) == [("publish", ("job:x", "j1"))]
    assert event.job["queue_position"] == 7


@pytest.mark.parametrize("failure", [redis.ConnectionError("bus away"),
                                     redis.TimeoutError("bus slow"), DB_DOWN])
async def test_an_announcement_that_fails_is_logged_and_the_rest_goes_on(
        drive: Drive, failure: Exception, caplog: pytest.LogCaptureFixture) -> None:
    """The bus (or the database, for the summary) failing costs that job's announcement
    only: its deliveries are still announced and sent."""
    ended = view("j1", "failed", batch_id="b1")
    ports = Ports({"batch_progress" if failure is DB_DOWN else "publish:j1": failure})

    await drive(outcomes.changed(PRESENTER, ended, [view("w1")]), ports)

    expected = [("publish", ("job:failed", "j1"))]
    if failure is DB_DOWN:
        expected.append(("batch_progress", "b1"))
    assert names(ports) == [*expected, ("queue_position", "w1"),
                            ("publish", ("job:queued", "w1")), ("send", "w1"),
                            ("note_sent", "w1")]
    [record] = [r for r in caplog.records if "could not publish" in r.getMessage()]
    assert record.levelno == logging.WARNING and "j1" in record.getMessage()
    assert (record.job_id, record.user_id) == ("j1", "u1")  # type: ignore[attr-defined]


async def test_a_position_that_cannot_be_read_publishes_nothing(
        drive: Drive, caplog: pytest.LogCaptureFixture) -> None:
    """Nothing is published (the row is the truth), and the event returned has no
    position."""
    ports = Ports({"queue_position": DB_DOWN})
    event = await drive(outcomes.announce(PRESENTER, view("j1")), ports)
    assert names(ports) == [("queue_position", "j1")]
    assert event == PRESENTER.event(view("j1")) and event.job["queue_position"] is None
    assert any("could not publish job:queued for job j1" in r.getMessage()
               for r in caplog.records)


async def test_a_message_redis_refuses_is_left_for_the_sweeper(
        drive: Drive, caplog: pytest.LogCaptureFixture) -> None:
    """Not noted sent (the sweeper sends it), logged; the next delivery still goes."""
    ports = Ports({"send:w1": redis.ConnectionError("refused")})
    await drive(outcomes.changed(PRESENTER, view("j1", "completed"),
                                 [view("w1"), view("w2")]), ports)
    assert [step for step in names(ports) if step[0] in ("send", "note_sent")] == [
        ("send", "w1"), ("send", "w2"), ("note_sent", "w2")]
    [record] = [r for r in caplog.records if "left for the sweeper" in r.getMessage()]
    assert "w1" in record.getMessage()


async def test_other_failures_are_the_callers(drive: Drive) -> None:
    """What the plan does not expect (a bug, a failed note) is raised from the runner."""
    ports = Ports({"note_sent": DB_DOWN})
    with pytest.raises(sqlalchemy.exc.OperationalError):
        await drive(outcomes.submit(PRESENTER, view("w1")), ports)
    with pytest.raises(ValueError, match="bad"):
        await drive(outcomes.publish(JobEvent("job:active", "u1", {"id": "j1", "seq": 1})),
                    Ports({"publish": ValueError("bad")}))


async def test_an_event_not_of_a_job_is_published_alone(
        drive: Drive, caplog: pytest.LogCaptureFixture) -> None:
    event = BatchEvent(user_id="u1", batch={"id": "b1"})
    ports = Ports()
    await drive(outcomes.publish(event), ports)
    assert ports.done == [("publish", event)]
    await drive(outcomes.publish(event), Ports({"publish": redis.ConnectionError("away")}))
    assert any("could not publish batch:progress" in r.getMessage() for r in caplog.records)
