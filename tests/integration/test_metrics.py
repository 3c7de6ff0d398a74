"""GET /metrics against real web and worker processes: the new series move as work is done."""

from __future__ import annotations

import asyncio
import secrets
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import event, insert
from starlette.applications import Starlette

from server.core import tasks as task_declarations
from server.core.signing import hash_token, mint_token
from server.core.token_cache import TokenCache
from server.data import store
from server.data.db import SyncDatabase
from server.data.models import Job, new_id, utcnow
from server.infra import metrics
from server.infra.settings import Settings
from server.web.http.error_handlers import EXCEPTION_HANDLERS
from server.web.http.routes import ops
from tests.conftest import Stack, start_web_process, stop
from tests.factories import LiveClient, auth, connected, jpeg_bytes, new_token, upload

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
IMAGE_STAGES = ("decoding", "thumbnail", "preview", "metadata")


async def _scrape(http: httpx.AsyncClient) -> Samples:
    """Every sample, parsed by prometheus_client's own text-format parser."""
    response = await http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def _value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    return sum(value for (sample, pairs), value in samples.items()
               if sample == name and labels.items() <= dict(pairs).items())


def _grew(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return _value(after, name, **labels) - _value(before, name, **labels)


@pytest.mark.one_database
async def test_uploads_stages_relay_sockets_and_queues_show_in_metrics(
        stack: Stack, http: httpx.AsyncClient, sockets: list[LiveClient]) -> None:
    before = await _scrape(http)
    token = await new_token(http)
    for _ in range(2):
        await connected(stack.url, token, sockets)

    n = 3
    images = [jpeg_bytes(320 + i, 240, color=(20 + 60 * i, 90, 17)) for i in range(n)]
    job_ids = []
    for data in images:
        response = await upload(http, token, data)
        assert response.status_code == 202, response.text
        job_ids.append(response.json()["job"]["id"])
    duplicate = await upload(http, token, images[0])
    assert duplicate.status_code == 200
    refused = await upload(http, token, b"plain text, not a picture", filename="notes.txt",
                           content_type="text/plain")
    assert refused.status_code == 415
    refused_code = refused.json()["error"]["code"]
    for job_id in job_ids:
        name, _ = await sockets[0].wait_final(job_id)
        assert name == "job:completed"

    # Every pushed event says when it was published (same host: no later than it arrived).
    for arrived, _name, payload in sockets[0].timed(job_ids[0]):
        assert isinstance(payload["published_at"], float)
        assert payload["published_at"] <= arrived

    after = await _scrape(http)
    assert _grew(before, after, "darkroom_uploads_total", outcome="accepted", status="202") >= n
    assert _grew(before, after, "darkroom_uploads_total", outcome="duplicate",
                 status="200") >= 1
    assert _grew(before, after, "darkroom_uploads_total", outcome="rejected", status="415",
                 reason=refused_code) >= 1
    for stage in IMAGE_STAGES:
        labels = {"type": "image.process", "stage": stage}
        assert _grew(before, after, "darkroom_job_stage_duration_seconds_count", **labels) >= n
        assert _value(after, "darkroom_job_stage_duration_seconds_bucket", le="+Inf",
                      **labels) == _value(after, "darkroom_job_stage_duration_seconds_count",
                                          **labels)
        assert _value(after, "darkroom_job_stage_duration_seconds_sum", **labels) > 0
    assert _grew(before, after, "darkroom_job_run_duration_seconds_count",
                 type="image.process", outcome="completed") >= n
    # Each run's wait in its queue (what the charts' wait p50/p95 read).
    assert _grew(before, after, "darkroom_job_wait_duration_seconds_count",
                 type="image.process") >= n
    assert _grew(before, after, "darkroom_event_relay_delay_seconds_count") > 0
    assert _value(after, "darkroom_socket_connections") >= 2
    assert _value(after, "darkroom_socket_users") >= 1
    assert _value(after, "darkroom_web_processes") >= 1
    for queue in ("images", "images.high", "images.low"):
        for state in ("ready", "delayed", "unacked"):
            assert ("darkroom_queue_messages",
                    (("queue", queue), ("state", state))) in after
    assert _value(after, "darkroom_jobs_by_type", type="image.process",
                  state="completed") >= n
    # The existing series stay.
    assert _value(after, "darkroom_jobs", queue="images", state="completed") >= n
    assert _value(after, "darkroom_workers") >= 1
    assert ("darkroom_dead_letters", ()) in after


async def test_a_socket_that_leaves_leaves_the_count(stack: Stack, http: httpx.AsyncClient,
                                                     sockets: list[LiveClient]) -> None:
    token = await new_token(http)
    client = await connected(stack.url, token, sockets)
    with_it = _value(await _scrape(http), "darkroom_socket_connections")
    assert with_it >= 1
    await client.close()
    # The server notices the close on its own time: wait for it (bounded), then check.
    deadline = time.monotonic() + 10
    while (count := _value(await _scrape(http), "darkroom_socket_connections")) >= with_it \
            and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert count <= with_it - 1


async def _scrape_until(http: httpx.AsyncClient, done: Callable[[Samples], bool],
                        timeout: float = 40.0) -> Samples:
    """Scrape until ``done`` holds (other processes report every few seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        samples = await _scrape(http)
        if done(samples) or time.monotonic() > deadline:
            return samples
        await asyncio.sleep(0.5)


@pytest.mark.one_database
async def test_any_web_process_reports_the_whole_deployment(
        stack: Stack, http: httpx.AsyncClient, sockets: list[LiveClient]) -> None:
    other, other_url = start_web_process(stack.env, stack.logs / "web-b.log")
    try:
        other_name = f"{socket.gethostname()}:{other.pid}"
        before = await _scrape(http)
        async with httpx.AsyncClient(base_url=other_url, timeout=30) as http_b:
            token = await new_token(http_b)
            client = await connected(other_url, token, sockets)
            response = await upload(http_b, token, jpeg_bytes(50, 40, color=(3, 141, 59)))
            assert response.status_code == 202, response.text

        # The first process's scrape shows the second one's socket and upload.
        def sees_b(samples: Samples) -> bool:
            return _value(samples, "darkroom_process_socket_connections",
                          process=other_name) >= 1 and _grew(
                before, samples, "darkroom_uploads_total", outcome="accepted") >= 1

        seen = await _scrape_until(http, sees_b)
        assert sees_b(seen), "the other web process's figures never showed"
        assert _value(seen, "darkroom_web_processes") >= 2

        # Killed without a word: it leaves the report once it has gone quiet. (The socket
        # closes first, so that no client is left reconnecting to a dead process.)
        await client.close()
        other.send_signal(signal.SIGKILL)
        other.wait()

        def b_gone(samples: Samples) -> bool:
            return not any(name == "darkroom_process_socket_connections"
                           and dict(labels).get("process") == other_name
                           for name, labels in samples)

        assert b_gone(await _scrape_until(http, b_gone))
    finally:
        stop(other)


# -- what a scrape costs, and who may scrape (one process, real Redis and SQLite) -----------


class _CountedDatabase:
    """``server.data.db.Database``'s interface over a sync SQLite engine whose connections count
    the steps of SQLite's virtual machine (its progress handler): rows visited, roughly,
    whatever the query plan says."""

    def __init__(self, url: str) -> None:
        self.sync = SyncDatabase(url)
        self.steps = 0
        event.listen(self.sync.engine, "connect", self._count_steps)

    def _count_steps(self, dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.set_progress_handler(self._step, _STEP)

    def _step(self) -> int:
        self.steps += _STEP
        return 0  # go on

    async def read(self, fn: Callable[..., Any], /, **kwargs: Any) -> Any:
        return self.sync.read(fn, **kwargs)

    async def write(self, fn: Callable[..., Any], /, **kwargs: Any) -> Any:
        return self.sync.write(fn, **kwargs)


_STEP = 10


def _scraped_app(settings: Settings, db: _CountedDatabase,
                 client: aioredis.Redis) -> httpx.AsyncClient:
    """A web process's /metrics, as create_app wires it (its state, ops routes)."""
    app = Starlette(routes=ops.routes, exception_handlers=EXCEPTION_HANDLERS)
    # The parts of ``AppState`` the ops routes use (the rest needs a whole deployment).
    app.state.darkroom = SimpleNamespace(
        settings=settings, db=db, redis=client,
        task_types=task_declarations.declared(include_test_tasks=False),
        tally=metrics.Tally(), socket_counts=lambda: (0, 0), finished_counts=None,
        tokens=TokenCache(settings.auth_cache_s, settings.auth_cache_entries))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://web")


def _add_jobs(db: SyncDatabase, *, finished: int, waiting: int) -> None:
    """``finished`` completed image jobs (the history) and ``waiting`` queued ones."""
    now = utcnow()

    def rows(count: int, state: str) -> list[dict[str, Any]]:
        return [{"id": new_id(), "user_id": "u", "type": "image.process", "queue": "images",
                 "state": state, "stage": state, "progress": 0, "attempt": 0,
                 "max_attempts": 1, "priority": "normal", "payload": {}, "seq": 1,
                 "created_at": now, "updated_at": now,
                 "finished_at": now if state == "completed" else None}
                for _ in range(count)]

    db.write(lambda s: s.execute(insert(Job), rows(finished, "completed") + rows(waiting,
                                                                                "queued")))


async def test_a_scrape_costs_the_backlog_not_the_history(redis_url: str,
                                                          tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'metrics.db'}"
    seed = SyncDatabase(url)
    seed.migrate()
    _add_jobs(seed, finished=3000, waiting=5)
    settings = Settings(redis_url=redis_url, database_url=url,
                        redis_prefix=f"mt{secrets.token_hex(4)}", metrics_recount_s=3600)
    client = aioredis.Redis.from_url(redis_url)
    web_a, web_b = _CountedDatabase(url), _CountedDatabase(url)
    try:
        async with _scraped_app(settings, web_a, client) as http_a, \
                _scraped_app(settings, web_b, client) as http_b:
            first = await _scrape(http_a)  # the deployment's first count of the history
            recount = web_a.steps
            assert _value(first, "darkroom_jobs", queue="images", state="completed") == 3000

            async def cost(http: httpx.AsyncClient, db: _CountedDatabase) -> tuple[int, Samples]:
                before = db.steps
                samples = await _scrape(http)
                return db.steps - before, samples

            # Another web process shows that count instead of making its own.
            small, seen = await cost(http_b, web_b)
            assert _value(seen, "darkroom_jobs", queue="images", state="completed") == 3000
            assert small * 20 < recount, (small, recount)

            # Three times the history, two more waiting: the next scrapes cost no more, and
            # show the backlog as it is now (the history as last counted, and how old).
            _add_jobs(seed, finished=6000, waiting=2)
            for http, db in ((http_b, web_b), (http_a, web_a)):
                steps, seen = await cost(http, db)
                # A pass over the history takes some 25 steps a row (the recount above): the
                # index lookups grow by a level, not by a step per ten rows added.
                assert steps - small < 6000 / 10, (steps, small)
                assert _value(seen, "darkroom_jobs", queue="images", state="queued") == 7
                assert _value(seen, "darkroom_jobs", queue="images", state="completed") == 3000
                assert 0 <= _value(seen, "darkroom_jobs_recount_age_seconds") < 60
    finally:
        await client.aclose()
        for db in (seed, web_a.sync, web_b.sync):
            db.dispose()


async def test_metrics_token_guards_the_scrape(redis_url: str, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'metrics.db'}"
    db = _CountedDatabase(url)
    db.sync.migrate()
    plain = mint_token()
    db.sync.write(store.create_user, token_hash=hash_token(plain))
    settings = Settings(redis_url=redis_url, database_url=url, admin_token="the-admin",
                        redis_prefix=f"mt{secrets.token_hex(4)}", metrics_token="scraper")
    client = aioredis.Redis.from_url(redis_url)
    try:
        async with _scraped_app(settings, db, client) as http:
            for headers in ({}, auth("wrong"), {"Authorization": "Basic c2NyYXBlcg=="}):
                refused = await http.get("/metrics", headers=headers)
                assert refused.status_code == 401, headers
                assert refused.json()["error"]["code"] == "unauthorized"
                assert refused.headers["www-authenticate"] == "Bearer"
            forbidden = await http.get("/metrics", headers=auth(plain))
            assert forbidden.status_code == 403
            for token in ("scraper", "the-admin"):
                allowed = await http.get("/metrics", headers=auth(token))
                assert allowed.status_code == 200, allowed.text
                assert "darkroom_jobs" in allowed.text
    finally:
        await client.aclose()
        db.sync.dispose()
