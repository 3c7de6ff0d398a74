"""The engines ``server.data.db`` builds from DATABASE_URL: pools and pre-ping per backend,
and where a SQLite file's transactions run."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.orm import Session
from sqlalchemy.pool import QueuePool, StaticPool

from server.data.db import WEB_POOL_SIZE, Database, SyncDatabase


def _dispose(db: Database) -> None:
    asyncio.run(db.dispose())


def test_a_sqlite_file_gets_the_web_pool_without_pre_ping(tmp_path: Path) -> None:
    """Uploads at concurrency 8 must not open and close overflow connections (the
    connection pragmas each time), and a local file needs no ping per session."""
    db = Database(f"sqlite:///{tmp_path / 'a.db'}")
    assert db._sync is not None
    pool = db._sync.engine.pool
    assert isinstance(pool, QueuePool) and pool.size() == WEB_POOL_SIZE
    assert not pool._pre_ping and not db.engine.sync_engine.pool._pre_ping
    _dispose(db)
    workers = SyncDatabase(f"sqlite:///{tmp_path / 'a.db'}")
    assert not workers.engine.pool._pre_ping
    workers.dispose()


async def test_a_sqlite_file_runs_each_transaction_in_one_thread_hop(tmp_path: Path) -> None:
    """The store functions run on the sync engine, off the event loop, one thread per
    transaction: the statements of a write never come back to the loop in between."""
    db = Database(f"sqlite:///{tmp_path / 'a.db'}")
    await db.migrate()
    loop_thread = threading.get_ident()
    seen: list[int] = []

    def two_statements(s: Session) -> int:
        seen.append(threading.get_ident())
        s.execute(text("CREATE TABLE IF NOT EXISTS t (x INTEGER)"))
        s.execute(text("INSERT INTO t VALUES (1)"))
        seen.append(threading.get_ident())
        return int(s.execute(text("SELECT count(*) FROM t")).scalar_one())

    try:
        assert await db.write(two_statements) == 1
        assert await db.read(lambda s: s.execute(text("SELECT count(*) FROM t")).scalar_one()) == 1
        await db.ping()
        assert len(set(seen)) == 1 and seen[0] != loop_thread
    finally:
        await db.dispose()


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
