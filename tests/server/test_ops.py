"""The shared count of finished jobs behind /metrics (``server.web.http.routes.ops``), against a
real Redis: one recount per interval for the whole deployment, however many scrape."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import redis.asyncio as aioredis

from server.core import keys
from server.data import store
from server.data.db import SyncDatabase
from server.infra.settings import Settings
from server.web.http.routes import ops

pytestmark = pytest.mark.integration


class _SlowCounts:
    """``Database.read`` over SQLite in memory, where the pass over the finished jobs takes
    a while (as it does over a long history) and is counted."""

    def __init__(self) -> None:
        self.sync = SyncDatabase("sqlite:///:memory:")
        self.sync.migrate()
        self.recounts = 0

    async def read(self, fn: Callable[..., Any], /, **kwargs: Any) -> Any:
        if fn is store.finished_job_counts:
            self.recounts += 1
            await asyncio.sleep(0.3)
        return self.sync.read(fn, **kwargs)


@pytest.fixture
def db() -> Iterator[_SlowCounts]:
    counts = _SlowCounts()
    try:
        yield counts
    finally:
        counts.sync.dispose()


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    connection = aioredis.Redis.from_url(redis_url)
    try:
        yield connection
    finally:
        await connection.aclose()


def _web_processes(n: int, client: aioredis.Redis, db: _SlowCounts) -> list[Any]:
    """The state of ``n`` web processes of one deployment."""
    settings = Settings(redis_prefix=f"op{secrets.token_hex(4)}", metrics_recount_s=60)
    return [SimpleNamespace(settings=settings, redis=client, db=db, finished_counts=None)
            for _ in range(n)]


async def test_scrapes_that_find_no_count_yet_leave_the_recount_to_one(
        client: aioredis.Redis, db: _SlowCounts) -> None:
    # With no count stored (the first scrape, or none for 10 intervals) no claim was
    # taken: every scrape at that moment made its own pass over the whole history.
    webs = _web_processes(5, client, db)
    counts = await asyncio.gather(*(ops._finished_counts(web, shared=True) for web in webs))
    assert db.recounts == 1
    assert len({count.at for count in counts}) == 1, "all show the one count"
    await ops._finished_counts(webs[0], shared=True)
    assert db.recounts == 1, "fresh: shown, not counted again"


async def test_a_claim_whose_holder_never_counts_does_not_block_the_scrapes(
        client: aioredis.Redis, db: _SlowCounts, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ops, "_RECOUNT_WAIT_S", 0.2)
    web = _web_processes(1, client, db)[0]
    prefix = web.settings.redis_prefix
    await client.set(keys.metrics_recount(prefix), "a web process that died", ex=60)
    counted = await ops._finished_counts(web, shared=True)
    assert db.recounts == 1
    assert await client.get(keys.metrics_finished(prefix)) == counted.encode().encode()
