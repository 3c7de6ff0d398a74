"""The engines ``server.data.db`` builds from DATABASE_URL: pools and pre-ping per backend,
and where a SQLite file's transactions run."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text
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




class _Probes:
    """A store function for write_grouped: a table of its own for each call (``n``),
    refusing those with ``fail``; it notes the calls of each of its runs."""

    __name__ = "probes"

    def __init__(self, pause_s: float = 0.0, pause_alone: int | None = None) -> None:
        """``pause_s``: each run pauses that long first (only a run of ``pause_alone``
        alone, if given)."""
        self.runs: list[list[int]] = []
        self.pause_s = pause_s
        self.pause_alone = pause_alone
        self.running = threading.Event()

    def __call__(self, s: Session, calls: list[dict[str, Any]]) -> list[str]:
        self.runs.append([call["n"] for call in calls])
        if self.pause_alone is None or self.runs[-1] == [self.pause_alone]:
            self.running.set()
            time.sleep(self.pause_s)
        for call in calls:
            s.execute(text(f"CREATE TABLE probe{call['n']} (x INTEGER)"))
            if call.get("fail"):
                raise ValueError(f"call {call['n']} refused")
        return [f"made {call['n']}" for call in calls]


async def _queued_behind_a_turn(path: Path, db: Database, probes: _Probes,
                                calls: list[dict[str, Any]], *,
                                gone: int | None = None) -> list[Any]:
    """The calls made while another process holds the write turn, then let go together;
    the caller of call ``gone`` (if given) goes while the turn is held, and still waits
    for its group (which answers it) before it goes on."""
    worker = WriteTurn(str(path.resolve()))
    worker.acquire()
    try:
        made = [asyncio.ensure_future(db.write_grouped(probes, **call)) for call in calls]
        await asyncio.sleep(0.2)
        assert not any(call.done() for call in made)
        if gone is not None:
            made[gone].cancel()
            await asyncio.sleep(0.1)
            assert not made[gone].done(), "the caller waits for its group"
    finally:
        worker.release()
    return await asyncio.wait_for(asyncio.gather(*made, return_exceptions=True), 10)


async def _gone_while_running(path: Path, db: Database, probes: _Probes,
                              calls: list[dict[str, Any]], *, gone: int) -> list[Any]:
    """The calls queued behind another process's write turn, then let go; the caller of
    call ``gone`` goes once ``probes`` pauses in the run it waits in."""
    worker = WriteTurn(str(path.resolve()))
    worker.acquire()
    try:
        made = [asyncio.ensure_future(db.write_grouped(probes, **call)) for call in calls]
        await asyncio.sleep(0.2)
    finally:
        worker.release()
    assert await asyncio.to_thread(probes.running.wait, 5)
    made[gone].cancel()
    return await asyncio.wait_for(asyncio.gather(*made, return_exceptions=True), 10)


async def test_grouped_writes_waiting_for_the_turn_are_made_in_one_call(
        tmp_path: Path) -> None:
    """Calls queued behind another process's write turn take one turn, one transaction
    and one call of the store function when it comes back, each with its own result."""
    path = tmp_path / "a.db"
    db = Database(f"sqlite:///{path}")
    await db.migrate()
    probes = _Probes()
    outcomes = await _queued_behind_a_turn(path, db, probes, [{"n": n} for n in range(5)])
    assert outcomes == [f"made {n}" for n in range(5)]
    # The flush takes what waits once it holds the turn: all of them.
    assert probes.runs == [[0, 1, 2, 3, 4]]
    assert await db.read(_tables) == [f"probe{n}" for n in range(5)]
    await db.dispose()


def _savepoints(db: Database) -> list[str]:
    """The SAVEPOINT statements the database's write threads run from now on."""
    assert db._sync is not None
    seen: list[str] = []

    @event.listens_for(db._sync.engine, "before_cursor_execute")
    def _note(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.upper().startswith("SAVEPOINT"):
            seen.append(statement)

    return seen


async def test_a_group_that_succeeds_takes_no_savepoint(tmp_path: Path) -> None:
    """Its transaction holds the group only, so the group needs no savepoint (with its
    release, a fifth of an upload group's write); a failing group is rolled back whole."""
    path = tmp_path / "a.db"
    db = Database(f"sqlite:///{path}")
    await db.migrate()
    savepoints = _savepoints(db)
    outcomes = await _queued_behind_a_turn(path, db, _Probes(), [{"n": n} for n in range(3)])
    assert outcomes == ["made 0", "made 1", "made 2"] and savepoints == []
    failing = await _queued_behind_a_turn(path, db, _Probes(),
                                          [{"n": n, "fail": n == 4} for n in range(3, 6)])
    assert failing[0::2] == ["made 3", "made 5"] and isinstance(failing[1], ValueError)
    assert len(savepoints) == 3, "one per call made alone, after the group was undone"
    assert await db.read(_tables) == ["probe0", "probe1", "probe2", "probe3", "probe5"]
    await db.dispose()


async def test_a_call_that_fails_its_group_fails_alone(tmp_path: Path) -> None:
    """The group's call fails: undone, then each call is made alone in a savepoint of its
    own; the failing one gets its error, the others are made."""
    path = tmp_path / "a.db"
    db = Database(f"sqlite:///{path}")
    await db.migrate()
    probes = _Probes()
    outcomes = await _queued_behind_a_turn(path, db, probes,
                                           [{"n": n, "fail": n == 3} for n in range(6)])
    assert isinstance(outcomes[3], ValueError) and "call 3 refused" in str(outcomes[3])
    assert [o for n, o in enumerate(outcomes) if n != 3] == [
        f"made {n}" for n in (0, 1, 2, 4, 5)]
    assert probes.runs == [[0, 1, 2, 3, 4, 5], [0], [1], [2], [3], [4], [5]]
    assert await db.read(_tables) == ["probe0", "probe1", "probe2", "probe4", "probe5"]
    assert await db.write_grouped(probes, n=7) == "made 7"  # the next group is made
    await db.dispose()


async def test_a_grouped_write_cancelled_before_its_group_is_made_is_never_made(
        tmp_path: Path) -> None:
    """A caller gone (an upload's client hung up) before its group took the turn: its
    call is not made, the others of the group are; the caller goes on only once the
    group is done with it."""
    path = tmp_path / "a.db"
    db = Database(f"sqlite:///{path}")
    await db.migrate()
    probes = _Probes()
    outcomes = await _queued_behind_a_turn(path, db, probes, [{"n": n} for n in range(4)],
                                           gone=2)
    assert isinstance(outcomes[2], asyncio.CancelledError)
    assert [outcomes[n] for n in (0, 1, 3)] == ["made 0", "made 1", "made 3"]
    assert probes.runs == [[0, 1, 3]]
    assert await db.read(_tables) == ["probe0", "probe1", "probe3"]
    await db.dispose()


async def test_a_group_that_fails_after_a_caller_went_makes_the_rest_alone(
        tmp_path: Path) -> None:
    """A caller gone before its group took the turn, and another call of the group
    failing: the gone one is not made, the failing one gets its error, the rest are made
    one by one (each caller answered once)."""
    path = tmp_path / "a.db"
    db = Database(f"sqlite:///{path}")
    await db.migrate()
    probes = _Probes()
    outcomes = await _queued_behind_a_turn(
        path, db, probes, [{"n": n, "fail": n == 2} for n in range(4)], gone=0)
    assert isinstance(outcomes[0], asyncio.CancelledError)
    assert isinstance(outcomes[2], ValueError) and "call 2 refused" in str(outcomes[2])
    assert [outcomes[1], outcomes[3]] == ["made 1", "made 3"]
    assert probes.runs == [[1, 2, 3], [1], [2], [3]]
    assert await db.read(_tables) == ["probe1", "probe3"]
    await db.dispose()


async def test_a_grouped_write_cancelled_while_its_group_runs_is_undone(
        tmp_path: Path) -> None:
    """A caller gone while its group's call runs: the group is undone and made again
    without it, before the commit; that caller goes on once the group is done."""
    path = tmp_path / "a.db"
    db = Database(f"sqlite:///{path}")
    await db.migrate()
    probes = _Probes(pause_s=0.3)
    outcomes = await _gone_while_running(path, db, probes, [{"n": n} for n in range(4)],
                                         gone=2)
    assert isinstance(outcomes[2], asyncio.CancelledError)
    assert [outcomes[n] for n in (0, 1, 3)] == ["made 0", "made 1", "made 3"]
    assert probes.runs == [[0, 1, 2, 3], [0, 1, 3]]
    assert await db.read(_tables) == ["probe0", "probe1", "probe3"]
    await db.dispose()


async def test_a_caller_gone_after_its_call_was_made_has_the_group_made_again(
        tmp_path: Path) -> None:
    """Its group failed and its calls are made one by one: the caller of a call already
    made goes away before the commit. The transaction is rolled back and made again
    without that call (and without the failing one, whose error stands)."""
    path = tmp_path / "a.db"
    db = Database(f"sqlite:///{path}")
    await db.migrate()
    probes = _Probes(pause_s=0.3, pause_alone=3)  # 0 is made when 3 runs alone
    outcomes = await _gone_while_running(
        path, db, probes, [{"n": n, "fail": n == 1} for n in range(4)], gone=0)
    assert isinstance(outcomes[0], asyncio.CancelledError)
    assert isinstance(outcomes[1], ValueError)
    assert outcomes[2:] == ["made 2", "made 3"]
    assert probes.runs == [[0, 1, 2, 3], [0], [1], [2], [3], [2, 3]]
    assert await db.read(_tables) == ["probe2", "probe3"]
    await db.dispose()


async def test_a_caller_gone_while_its_call_runs_alone_is_undone_alone(
        tmp_path: Path) -> None:
    """Its group failed and its calls are made one by one: the caller of the call running
    goes. That call is undone (its savepoint), answered once, and the others stand."""
    path = tmp_path / "a.db"
    db = Database(f"sqlite:///{path}")
    await db.migrate()
    probes = _Probes(pause_s=0.3, pause_alone=2)
    outcomes = await _gone_while_running(
        path, db, probes, [{"n": n, "fail": n == 1} for n in range(4)], gone=2)
    assert isinstance(outcomes[2], asyncio.CancelledError)
    assert isinstance(outcomes[1], ValueError)
    assert [outcomes[0], outcomes[3]] == ["made 0", "made 3"]
    assert probes.runs == [[0, 1, 2, 3], [0], [1], [2], [3]]
    assert await db.read(_tables) == ["probe0", "probe3"]
    await db.dispose()


async def test_more_grouped_writes_than_a_group_holds_are_all_made(tmp_path: Path) -> None:
    """Past GROUP_MAX_CALLS the rest wait for the next group: a turn is never held long."""
    path = tmp_path / "a.db"
    db = Database(f"sqlite:///{path}")
    await db.migrate()
    probes = _Probes()
    count = GROUP_MAX_CALLS + 5
    outcomes = await _queued_behind_a_turn(path, db, probes, [{"n": n} for n in range(count)])
    assert outcomes == [f"made {n}" for n in range(count)]
    assert [len(run) for run in probes.runs] == [GROUP_MAX_CALLS, 5]
    await db.dispose()


async def test_grouped_writes_without_a_sqlite_file_are_one_transaction_each() -> None:
    """Where writes are concurrent (PostgreSQL; here an in-memory database on the async
    engine) each call is its own transaction, alone in its call of the store function."""
    db = Database("sqlite+aiosqlite:///:memory:")
    probes = _Probes()
    assert await asyncio.gather(*(db.write_grouped(probes, n=n) for n in range(3))) == [
        "made 0", "made 1", "made 2"]
    assert sorted(probes.runs) == [[0], [1], [2]]
    with pytest.raises(ValueError):
        await db.write_grouped(probes, n=5, fail=True)
    assert await db.read(_tables) == ["probe0", "probe1", "probe2"]
    await db.dispose()
