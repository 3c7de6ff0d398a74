"""The engines ``server.data.db`` builds from DATABASE_URL: pools and pre-ping per backend.

Nothing here connects: the options are read from the engines as built."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy.pool import QueuePool, StaticPool

from server.data.db import WEB_POOL_SIZE, Database, SyncDatabase


def _dispose(db: Database) -> None:
    asyncio.run(db.dispose())


def test_a_sqlite_file_gets_the_web_pool_without_pre_ping(tmp_path: Path) -> None:
    """Uploads at concurrency 8 must not open and close overflow connections (an aiosqlite
    thread each), and a local file needs no ping per session."""
    db = Database(f"sqlite:///{tmp_path / 'a.db'}")
    pool = db.engine.sync_engine.pool
    assert isinstance(pool, QueuePool) and pool.size() == WEB_POOL_SIZE
    assert not pool._pre_ping
    _dispose(db)
    workers = SyncDatabase(f"sqlite:///{tmp_path / 'a.db'}")
    assert not workers.engine.pool._pre_ping
    workers.dispose()


def test_postgresql_keeps_the_default_pool_and_pre_ping() -> None:
    """The README's connection count (web + worker processes x 15) stays true, and a
    connection the server dropped is noticed before use."""
    db = Database("postgresql://nobody@127.0.0.1:1/none")
    pool = db.engine.sync_engine.pool
    assert isinstance(pool, QueuePool) and pool.size() == 5 and pool._pre_ping
    _dispose(db)
    workers = SyncDatabase("postgresql://nobody@127.0.0.1:1/none")
    assert workers.engine.pool._pre_ping
    workers.dispose()


def test_an_in_memory_sqlite_database_still_builds() -> None:
    """One static connection: no pool size to give it."""
    db = Database("sqlite://")
    assert isinstance(db.engine.sync_engine.pool, StaticPool)
    _dispose(db)
