"""The engines ``server.data.db`` builds from DATABASE_URL: pools and pre-ping per backend,
and where a SQLite file's transactions run."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session
from sqlalchemy.pool import QueuePool, StaticPool

from server.data.db import GROUP_MAX_CALLS, WEB_POOL_SIZE, Database, SyncDatabase, WriteTurn


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
        return int(s.execute(text("SELECT count(*) FROM t")).scalar_one())

    def count(s: Session) -> int:
        seen.append(threading.get_ident())
        return int(s.execute(text("SELECT count(*) FROM t")).scalar_one())

    try:
        assert await db.write(two_statements) == 1
        assert await db.read(count) == 1
        await db.ping()
        assert loop_thread not in seen
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


async def test_writes_waiting_for_their_turn_leave_threads_for_reads(tmp_path: Path) -> None:
    """While a worker process holds SQLite's write turn, the web's queued writes wait in
    threads of their own: a read (a token's check) still gets a thread and answers."""
    path = tmp_path / "a.db"
    db = Database(f"sqlite:///{path}")
    await db.migrate()
    worker = WriteTurn(str(path.resolve()))  # another open file: as another process
    worker.acquire()
    try:
        writes = [asyncio.ensure_future(db.write(lambda s: s.execute(text("SELECT 1"))))
                  for _ in range(WEB_POOL_SIZE)]
        await asyncio.sleep(0.2)
        assert not any(write.done() for write in writes)
        answer = await asyncio.wait_for(
            db.read(lambda s: s.execute(text("SELECT 41 + 1")).scalar_one()), 5)
        assert answer == 42
    finally:
        worker.release()
    await asyncio.wait_for(asyncio.gather(*writes), 10)
    await db.dispose()


async def test_a_write_cancelled_as_it_runs_is_rolled_back_before_the_caller_goes_on(
        tmp_path: Path) -> None:
    """Cancelled (twice) while its transaction runs in a thread, the write is rolled back,
    and the caller's cancellation goes on only once the thread is done with it, so that its
    clean-up (an upload's file removed) never races its own write."""
    db = Database(f"sqlite:///{tmp_path / 'a.db'}")
    await db.migrate()
    started, ended = threading.Event(), threading.Event()

    def slow(s: Session) -> None:
        started.set()
        s.execute(text("CREATE TABLE probe (x INTEGER)"))
        time.sleep(0.3)
        ended.set()

    write = asyncio.ensure_future(db.write(slow))
    await asyncio.to_thread(started.wait, 5)
    write.cancel()
    await asyncio.sleep(0.05)
    write.cancel()  # cancelled again (as a shutdown does): it still waits for the thread
    with pytest.raises(asyncio.CancelledError):
        await write
    assert ended.is_set()
    assert await db.read(_tables) == []
    await db.dispose()


async def test_a_write_cancelled_before_its_turn_is_never_made(tmp_path: Path) -> None:
    """Writes queued behind another process's write turn (the waiting ones in threads,
    more in the executor's queue), then cancelled: none of them is made, not even once
    the turn comes back; a write after them is."""
    path = tmp_path / "a.db"
    db = Database(f"sqlite:///{path}")
    await db.migrate()
    ran: list[int] = []

    def make(n: int) -> Callable[[Session], None]:
        def write(s: Session) -> None:
            ran.append(n)
            s.execute(text(f"CREATE TABLE probe{n} (x INTEGER)"))
        return write

    worker = WriteTurn(str(path.resolve()))
    worker.acquire()
    try:
        writes = [asyncio.ensure_future(db.write(make(n))) for n in range(8)]
        await asyncio.sleep(0.2)
        for write in writes:
            write.cancel()
        waited = asyncio.gather(*writes, return_exceptions=True)
        await asyncio.sleep(0.1)
    finally:
        worker.release()
    outcomes = await asyncio.wait_for(waited, 10)
    assert all(isinstance(outcome, asyncio.CancelledError) for outcome in outcomes)
    await db.write(make(99))
    assert ran == [99]
    assert await db.read(_tables) == ["probe99"]
    await db.dispose()


def _tables(s: Session) -> list[str]:
    return list(s.scalars(text("SELECT name FROM sqlite_master WHERE type = 'table' "
                               "AND name GLOB 'probe*' ORDER BY name")))



def _probe(s: Session, *, n: int, fail: bool = False, ran: list[int] | None = None) -> int:
    """A store function for write_grouped: a table of its own, then its number."""
    if ran is not None:
        ran.append(n)
    s.execute(text(f"CREATE TABLE probe{n} (x INTEGER)"))
    if fail:
        raise ValueError(f"call {n} refused")
    return n


def _told(s: Session, results: list[int]) -> list[str]:
    return [f"made {n}" for n in results]


async def test_grouped_writes_waiting_for_the_turn_are_made_in_one_transaction(
        tmp_path: Path) -> None:
    """Calls queued behind another process's write turn take one turn and one transaction
    when it comes back: each gets its own result, ``then`` sees them all at once, and
    one call's error undoes only that call's writes."""
    path = tmp_path / "a.db"
    db = Database(f"sqlite:///{path}")
    await db.migrate()
    groups: list[list[int]] = []

    def then(s: Session, results: list[int]) -> list[str]:
        groups.append(results)
        return _told(s, results)

    worker = WriteTurn(str(path.resolve()))
    worker.acquire()
    try:
        calls = [asyncio.ensure_future(db.write_grouped(_probe, then, n=n, fail=n == 3))
                 for n in range(6)]
        await asyncio.sleep(0.2)
        assert not any(call.done() for call in calls)
    finally:
        worker.release()
    outcomes = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 10)
    assert isinstance(outcomes[3], ValueError) and "call 3 refused" in str(outcomes[3])
    assert [o for n, o in enumerate(outcomes) if n != 3] == [
        f"made {n}" for n in (0, 1, 2, 4, 5)]
    # The flush takes what waits once it holds the turn: all of them, the failed one
    # left out of ``then``.
    assert groups == [[0, 1, 2, 4, 5]]
    assert await db.read(_tables) == ["probe0", "probe1", "probe2", "probe4", "probe5"]
    await db.dispose()


async def test_a_grouped_write_whose_end_fails_undoes_the_whole_group(tmp_path: Path) -> None:
    """``then`` runs in the group's transaction: its error reaches every call, and none of
    their writes is kept."""
    path = tmp_path / "a.db"
    db = Database(f"sqlite:///{path}")
    await db.migrate()

    def then(s: Session, results: list[int]) -> list[str]:
        raise RuntimeError("no positions")

    worker = WriteTurn(str(path.resolve()))
    worker.acquire()
    try:
        calls = [asyncio.ensure_future(db.write_grouped(_probe, then, n=n)) for n in range(3)]
        await asyncio.sleep(0.2)
    finally:
        worker.release()
    outcomes = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 10)
    assert all(isinstance(o, RuntimeError) for o in outcomes), outcomes
    assert await db.read(_tables) == []
    assert await db.write_grouped(_probe, _told, n=7) == "made 7"  # the next group is made
    await db.dispose()


async def test_a_grouped_write_cancelled_before_its_group_is_made_is_never_made(
        tmp_path: Path) -> None:
    """A caller gone (an upload's client hung up) before its group took the turn: its
    call is not made, the others of the group are; the caller goes on only once the
    group is done with it."""
    path = tmp_path / "a.db"
    db = Database(f"sqlite:///{path}")
    await db.migrate()
    ran: list[int] = []
    worker = WriteTurn(str(path.resolve()))
    worker.acquire()
    try:
        calls = [asyncio.ensure_future(db.write_grouped(_probe, _told, n=n, ran=ran))
                 for n in range(4)]
        await asyncio.sleep(0.2)
        calls[2].cancel()
        cancelled = asyncio.gather(calls[2], return_exceptions=True)
        await asyncio.sleep(0.1)
        assert not calls[2].done(), "the caller waits for its group"
    finally:
        worker.release()
    outcomes = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 10)
    assert isinstance((await cancelled)[0], asyncio.CancelledError)
    assert [outcomes[n] for n in (0, 1, 3)] == ["made 0", "made 1", "made 3"]
    assert 2 not in ran
    assert await db.read(_tables) == ["probe0", "probe1", "probe3"]
    await db.dispose()


async def test_more_grouped_writes_than_a_group_holds_are_all_made(tmp_path: Path) -> None:
    """Past GROUP_MAX_CALLS the rest wait for the next group: a turn is never held long."""
    path = tmp_path / "a.db"
    db = Database(f"sqlite:///{path}")
    await db.migrate()
    sizes: list[int] = []

    def then(s: Session, results: list[int]) -> list[str]:
        sizes.append(len(results))
        return _told(s, results)

    worker = WriteTurn(str(path.resolve()))
    worker.acquire()
    try:
        calls = [asyncio.ensure_future(db.write_grouped(_probe, then, n=n))
                 for n in range(GROUP_MAX_CALLS + 5)]
        await asyncio.sleep(0.2)
    finally:
        worker.release()
    outcomes = await asyncio.wait_for(asyncio.gather(*calls), 10)
    assert outcomes == [f"made {n}" for n in range(GROUP_MAX_CALLS + 5)]
    assert max(sizes) == GROUP_MAX_CALLS and sum(sizes) == GROUP_MAX_CALLS + 5
    await db.dispose()


async def test_grouped_writes_without_a_sqlite_file_are_one_transaction_each() -> None:
    """Where writes are concurrent (PostgreSQL; here an in-memory database on the async
    engine) each call is its own transaction, ``then`` included."""
    db = Database("sqlite+aiosqlite:///:memory:")
    groups: list[list[int]] = []

    def then(s: Session, results: list[int]) -> list[str]:
        groups.append(results)
        return _told(s, results)

    assert await asyncio.gather(*(db.write_grouped(_probe, then, n=n) for n in range(3))) == [
        "made 0", "made 1", "made 2"]
    assert sorted(groups) == [[0], [1], [2]]
    with pytest.raises(ValueError):
        await db.write_grouped(_probe, then, n=5, fail=True)
    assert await db.read(_tables) == ["probe0", "probe1", "probe2"]
    await db.dispose()
