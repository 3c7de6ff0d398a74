"""Webhooks and the deliveries of a job's end (``store.webhooks``).

On SQLite, and on PostgreSQL too when TEST_DATABASE_URL is set (``conftest``)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.orm import Session

from server.core import quotas
from server.core.jobs import JobState
from server.core.search import JobSearch
from server.core.tasks import WEBHOOK_DELIVER, WEBHOOK_MAX_ATTEMPTS
from server.data import store
from server.data.db import SyncDatabase
from server.data.models import Job, Webhook, new_id
from tests.server.store.rows import ERROR, new_job, new_user, stored_job


def test_webhooks_are_per_user_and_capped(db: SyncDatabase) -> None:
    """Listed in creation order per user; the 21st is refused (None); only the owner deletes."""
    owner, other = new_user(db), new_user(db)

    def many(s: Session) -> list[Webhook | None]:
        return [store.create_webhook(s, user_id=owner, url=f"https://h.example/{i}")
                for i in range(quotas.MAX_WEBHOOKS_PER_USER)]

    made = db.write(many)
    assert all(made)
    assert db.write(store.create_webhook, user_id=owner, url="https://h.example/x") is None
    theirs = db.write(store.create_webhook, user_id=other, url="https://o.example/")
    assert theirs is not None
    listed = db.read(store.list_webhooks, user_id=owner)
    assert [h.id for h in listed] == sorted(h.id for h in made if h)
    assert {h.url for h in listed} == {f"https://h.example/{i}" for i in range(20)}

    first = listed[0].id
    assert db.write(store.delete_webhook, user_id=other, webhook_id=first) is False
    assert db.write(store.delete_webhook, user_id=owner, webhook_id=first) is True
    assert db.write(store.delete_webhook, user_id=owner, webhook_id=first) is False
    assert len(db.read(store.list_webhooks, user_id=owner)) == 19
    assert db.write(store.create_webhook, user_id=owner, url="https://h.example/x") is not None
    assert [h.id for h in db.read(store.list_webhooks, user_id=other)] == [theirs.id]


def test_create_webhook_deliveries_queues_one_job_per_url(db: SyncDatabase) -> None:
    """One queued webhook.deliver job per registered URL, carrying event and body; none for
    a delivery job itself, none for a user without webhooks (whose body is never made)."""
    user_id = new_user(db)
    urls = ["https://a.example/", "https://b.example/"]
    for url in urls:
        db.write(store.create_webhook, user_id=user_id, url=url)
    job = new_job(db, user_id)
    body = {"job": {"id": job.id}}
    made = db.write(lambda s: store.create_webhook_deliveries(
        s, job=job, body=lambda: ("job:completed", body)))
    assert len(made) == 2
    stored = [stored_job(db, view.job.id) for view in made]
    assert sorted(d.payload["url"] for d in stored) == urls
    for delivery in stored:
        assert (delivery.type, delivery.queue, delivery.state, delivery.max_attempts,
                delivery.user_id) == (WEBHOOK_DELIVER.name, WEBHOOK_DELIVER.queue, "queued", 5,
                                      user_id)
        assert delivery.payload["event"] == "job:completed" and delivery.payload["body"] == body

    def never() -> tuple[str, dict[str, Any]]:
        raise AssertionError("a body made with nobody to send it to")

    assert db.write(lambda s: store.create_webhook_deliveries(s, job=stored[0], body=never)) == []
    lonely = new_job(db, new_user(db))
    assert db.write(lambda s: store.create_webhook_deliveries(s, job=lonely, body=never)) == []


def _hook(view: store.JobView) -> tuple[str, dict[str, Any]]:
    return f"job:{view.job.state}", {"id": view.job.id, "state": view.job.state}


def _deliveries(db: SyncDatabase, user_id: str) -> list[Job]:
    return [v.job for v in db.read(store.list_jobs, user_id=user_id, limit=100,
                                   search=JobSearch(type=WEBHOOK_DELIVER.name))]


def test_end_with_deliveries_queues_deliveries_when_the_change_ends_the_job(
        db: SyncDatabase) -> None:
    """A final change (transition, dead_letter, cancel_job) and its deliveries are stored
    together; the body is made from the ended job."""
    user_id = new_user(db)
    db.write(store.create_webhook, user_id=user_id, url="https://a.example/")
    db.write(store.create_webhook, user_id=user_id, url="https://b.example/")
    job = new_job(db, user_id)
    db.write(store.begin_attempt, job_id=job.id)
    view, made = db.write(store.end_with_deliveries, change=store.transition, webhook=_hook,
                          job_id=job.id, state=JobState.COMPLETED)
    assert view is not None and view.job.state == "completed" and len(made) == 2
    assert stored_job(db, job.id).state == "completed"
    stored = _deliveries(db, user_id)
    assert sorted(d.id for d in stored) == sorted(v.job.id for v in made)
    assert {d.payload["event"] for d in stored} == {"job:completed"}
    assert {d.payload["body"]["id"] for d in stored} == {job.id}
    # The type's own attempts (they were RETRY_MAX_ATTEMPTS, the caller's, before).
    assert {d.max_attempts for d in stored} == {WEBHOOK_MAX_ATTEMPTS}
    # Each names the job it serves: the job's page lists them, newest first, capped.
    listed = db.read(store.deliveries_of, job_id=job.id, limit=10)
    assert [d.id for d in listed] == sorted((v.job.id for v in made), reverse=True)
    assert len(db.read(store.deliveries_of, job_id=job.id, limit=1)) == 1

    failing = new_job(db, user_id)
    db.write(store.begin_attempt, job_id=failing.id)
    _, made = db.write(store.end_with_deliveries, change=store.dead_letter, webhook=_hook,
                       job_id=failing.id, error=ERROR, traceback=None)
    assert len(made) == 2 and {stored_job(db, v.job.id).payload["event"] for v in made} == {
        "job:failed"}
    cancelled = new_job(db, user_id)
    _, made = db.write(store.end_with_deliveries, change=store.cancel_job, webhook=_hook,
                       job_id=cancelled.id, user_id=user_id)
    assert len(made) == 2 and stored_job(db, cancelled.id).state == "cancelled"
    assert len(_deliveries(db, user_id)) == 6


def test_end_with_deliveries_drops_none_however_many_are_unfinished(db: SyncDatabase) -> None:
    """Every final state is POSTed: an owner with many deliveries unfinished (waiting out
    a backoff, say) still gets one per URL for each job that ends."""
    user_id = new_user(db)
    db.write(store.create_webhook, user_id=user_id, url="https://a.example/")
    for _ in range(4):
        new_job(db, user_id, queue=WEBHOOK_DELIVER.queue, task_type=WEBHOOK_DELIVER.name)
    job = new_job(db, user_id)
    db.write(store.begin_attempt, job_id=job.id)
    _, made = db.write(store.end_with_deliveries, change=store.transition, webhook=_hook,
                       job_id=job.id, state=JobState.COMPLETED)
    assert len(made) == 1
    assert made[0].job.payload["body"]["id"] == job.id


def test_end_with_deliveries_queues_nothing_for_a_change_that_does_not_end_the_job(
        db: SyncDatabase) -> None:
    """Non-final change or unknown job: no deliveries, and the webhook body is never made."""
    user_id = new_user(db)
    db.write(store.create_webhook, user_id=user_id, url="https://a.example/")
    job = new_job(db, user_id)

    def never(view: store.JobView) -> tuple[str, dict[str, Any]]:
        raise AssertionError("no body for a job that did not end")

    view, made = db.write(store.end_with_deliveries, change=store.transition, webhook=never,
                          job_id=job.id, state=JobState.ACTIVE)
    assert view is not None and view.job.state == "active" and made == []
    assert stored_job(db, job.id).state == "active"
    view, made = db.write(store.end_with_deliveries, change=store.transition, webhook=never,
                          job_id=new_id(), state=JobState.COMPLETED)
    assert (view, made) == (None, [])
    assert _deliveries(db, user_id) == []


def test_end_with_deliveries_is_one_transaction(db: SyncDatabase) -> None:
    """If making the deliveries fails, the job does not end either."""
    user_id = new_user(db)
    db.write(store.create_webhook, user_id=user_id, url="https://a.example/")
    job = new_job(db, user_id)
    db.write(store.begin_attempt, job_id=job.id)

    def broken(view: store.JobView) -> tuple[str, dict[str, Any]]:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        db.write(store.end_with_deliveries, change=store.transition, webhook=broken,
                 job_id=job.id, state=JobState.COMPLETED)
    assert stored_job(db, job.id).state == "active"
    assert _deliveries(db, user_id) == []
