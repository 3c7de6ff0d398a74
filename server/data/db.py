"""Database engines and sessions from Settings: async for the web, sync for workers.

On a SQLite file the web process runs its store functions on the workers' kind of sync
engine, each read or write transaction in one hop to a thread of its own pool: through
the async driver every statement is about four hops to aiosqlite's thread and back, and
an upload's two transactions took half as much CPU again that way (bench/README.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import fcntl
import functools
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session, sessionmaker

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

T = TypeVar("T")
P = ParamSpec("P")
# A store function: a session first, then its own (checked) arguments.
Query = Callable[Concatenate[Session, P], T]
# A store function a group commit calls (``Database.write_grouped``): the keyword
# arguments of several calls at once, a result for each in order.
Grouped = Callable[[Session, list[dict[str, Any]]], list[T]]

# "postgres://" is what Heroku, Render and others hand out; SQLAlchemy wants "postgresql".
_ASYNC_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+psycopg",
                  "postgres": "postgresql+psycopg"}
_SYNC_DRIVERS = {"sqlite": "sqlite+pysqlite", "postgresql": "postgresql+psycopg",
                 "postgres": "postgresql+psycopg"}


def _with_driver(url: str, drivers: dict[str, str]) -> str:
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend not in drivers:
        raise ValueError(f"unsupported DATABASE_URL backend {backend!r} (use sqlite or postgresql)")
    return parsed.set(drivername=drivers[backend]).render_as_string(hide_password=False)


def async_url(url: str) -> str:
    """DATABASE_URL with the async driver (aiosqlite / psycopg)."""
    return _with_driver(url, _ASYNC_DRIVERS)


def sync_url(url: str) -> str:
    """DATABASE_URL with the sync driver (pysqlite / psycopg)."""
    return _with_driver(url, _SYNC_DRIVERS)


_WAL_TRIES = 100  # 10 s in all


def _use_wal(cur: Any) -> None:
    """Put the database in WAL mode (it stays so, in the file).

    Switching needs the database to itself, and SQLite answers "locked" at once, without
    waiting on the busy timeout, while another connection is in a transaction: so several
    processes opening a new database together (one migrating) try again for a while.
    """
    for attempt in range(_WAL_TRIES):
        cur.execute("PRAGMA journal_mode")
        if str(cur.fetchone()[0]).lower() == "wal":
            return
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except Exception as exc:  # sqlite3's or the async driver's OperationalError
            if "locked" not in str(exc) or attempt == _WAL_TRIES - 1:
                raise
            time.sleep(0.1)


def _configure_sqlite(engine: Engine) -> None:
    """WAL, a busy timeout and BEGIN IMMEDIATE for writes (FACTS.md §5)."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # let the "begin" hook below issue BEGIN itself
        cur = dbapi_conn.cursor()
        # 30 s: long enough to ride out a burst of writers, short enough to surface a deadlock.
        for pragma in ("busy_timeout=30000", "synchronous=NORMAL", "foreign_keys=ON"):
            cur.execute("PRAGMA " + pragma)
        _use_wal(cur)
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")


def _is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


_NO_SPAN: contextlib.nullcontext[None] = contextlib.nullcontext()


class _Spans:
    """A span per transaction (``db.read <query>``, ``db.write <query>``) when given a
    tracer (``server.infra.tracing``, on only when configured), and only inside a trace:
    the background loops' queries start none of their own. Without a tracer, nothing."""

    def __init__(self, tracer: Tracer | None, url: str) -> None:
        self.tracer = tracer
        backend = make_url(url).get_backend_name()
        self.attributes = {"db.system": "sqlite" if backend == "sqlite" else "postgresql"}

    def __call__(self, kind: str,
                 fn: Callable[..., object]) -> contextlib.AbstractContextManager[object]:
        if self.tracer is None:
            return _NO_SPAN
        from opentelemetry import trace

        if not trace.get_current_span().get_span_context().is_valid:
            return _NO_SPAN
        return self.tracer.start_as_current_span(
            f"db.{kind} {getattr(fn, '__name__', 'query')}", kind=trace.SpanKind.CLIENT,
            attributes=self.attributes)


class WriteTurn:
    """SQLite's one writer at a time, queued on a file lock beside the database file.

    Every process (web and workers) takes it around its write transactions, so a writer
    waits in the kernel and wakes the moment the lock is free, instead of polling in
    SQLite's busy handler, whose back-off sleeps grow to 100 ms and stretch the latency
    of uploads while workers write. Threads of one process queue on a lock of their own
    first. A process that dies holding it releases it with its file descriptors.
    """

    def __init__(self, database_path: str | None) -> None:
        self._threads = threading.Lock()
        self._path = f"{database_path}-writer.lock" if database_path else None
        self._fd: int | None = None

    def acquire(self) -> None:
        self._threads.acquire()
        try:
            if self._path is not None:
                if self._fd is None:
                    self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
                fcntl.flock(self._fd, fcntl.LOCK_EX)
        except BaseException:
            self._threads.release()
            raise

    def release(self) -> None:
        try:
            if self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._threads.release()

    def __enter__(self) -> None:
        self.acquire()

    def __exit__(self, *_exc: object) -> None:
        self.release()


class AsyncWriteTurn:
    """``WriteTurn`` for the event loop: the wait happens in a thread, never on the loop."""

    def __init__(self, turn: WriteTurn) -> None:
        self._turn = turn

    async def __aenter__(self) -> None:
        taking = asyncio.ensure_future(asyncio.to_thread(self._turn.acquire))
        try:
            await asyncio.shield(taking)
        except asyncio.CancelledError:
            # The thread goes on waiting; whenever it gets the turn, give it back.
            taking.add_done_callback(
                lambda done: None if done.cancelled() or done.exception() is not None
                else self._turn.release())
            raise

    async def __aexit__(self, *_exc: object) -> None:
        self._turn.release()


def _sqlite_path(url: str) -> str | None:
    database = make_url(url).database
    return None if not database or database == ":memory:" else str(Path(database).resolve())


# Threads (and connections) the web process keeps for a SQLite file: its requests, the
# relay's and the sweeper's reads run concurrently. Writes have threads of their own:
# SQLite runs one at a time anyway (the write turn), and writers waiting for their turn
# must not hold every thread while reads (a token's check, a socket's snapshot) could go on.
WEB_READ_THREADS = 16
WEB_WRITE_THREADS = 4
WEB_POOL_SIZE = WEB_READ_THREADS + WEB_WRITE_THREADS


class _Abandoned(Exception):
    """The caller of a write was cancelled before the write was made: roll it back."""


# The most calls a group commit makes in one transaction (``Database.write_grouped``);
# more wait for the next: a write turn is never held for long.
GROUP_MAX_CALLS = 32


class _GroupedCall:
    """One call of a group commit: its arguments, its caller's context, its outcome."""

    def __init__(self, kwargs: dict[str, Any], abandoned: threading.Event,
                 context: contextvars.Context) -> None:
        self.kwargs, self.abandoned, self.context = kwargs, abandoned, context
        self.future: Future[Any] = Future()
        self.future.set_running_or_notify_cancel()  # never cancelled: its caller waits


def _unabandoned(calls: list[_GroupedCall]) -> list[_GroupedCall]:
    """The calls whose callers still wait; the others are answered ``_Abandoned``."""
    live = []
    for call in calls:
        if call.abandoned.is_set():
            call.future.set_exception(_Abandoned())
        else:
            live.append(call)
    return live


def _fail(calls: list[_GroupedCall], exc: BaseException) -> None:
    """Answer every call not answered yet with ``exc`` (``_Abandoned`` for what is not
    an Exception: the thread is going down)."""
    for call in calls:
        if not call.future.done():
            call.future.set_exception(exc if isinstance(exc, Exception) else _Abandoned())


def _call(fn: Grouped[Any], session: Session, calls: list[_GroupedCall]) -> list[Any]:
    """``fn`` for these calls, in the first one's context; ``_Abandoned`` if any of their
    callers went meanwhile."""
    results = calls[0].context.run(fn, session, [call.kwargs for call in calls])
    if any(call.abandoned.is_set() for call in calls):
        raise _Abandoned
    return list(results)


def _each_alone(fn: Grouped[Any], session: Session,
                calls: list[_GroupedCall]) -> list[tuple[_GroupedCall, Any]]:
    """Each call in one call of ``fn`` of its own, in a savepoint of its own: a failing
    one gets its error, the others are made (after their group failed)."""
    made = []
    for call in calls:
        try:
            with session.begin_nested():
                [result] = _call(fn, session, [call])
            made.append((call, result))
        except Exception as exc:
            call.future.set_exception(exc)
    return made


class _GroupFailed(Exception):
    """A group's call of ``fn`` failed: its transaction is rolled back, and its calls are
    made again one by one."""


class _WriteGroup:
    """The calls of one store function waiting for a group commit. At most one flush
    runs at a time, and it takes what waits once it holds the write turn."""

    def __init__(self, sync: SyncDatabase, fn: Grouped[Any]) -> None:
        self._sync, self._fn = sync, fn
        self._lock = threading.Lock()
        self._waiting: list[_GroupedCall] = []
        self._flushing = False

    def add(self, call: _GroupedCall) -> bool:
        """Queue a call; True when the caller must start a flush (none runs)."""
        with self._lock:
            self._waiting.append(call)
            start, self._flushing = not self._flushing, True
        return start

    def _take(self) -> list[_GroupedCall]:
        with self._lock:
            taken = self._waiting[:GROUP_MAX_CALLS]
            del self._waiting[:GROUP_MAX_CALLS]
            return taken

    def flush(self) -> None:
        """Commit groups until none waits (in a write thread)."""
        try:
            while True:
                self._sync.write_group(self._take, self._fn)
                with self._lock:
                    if not self._waiting:
                        self._flushing = False
                        return
        except BaseException as exc:
            # Not one of the calls' errors (those go to their futures): the thread is
            # going down. No call may wait for ever.
            self.fail(exc)
            raise

    def fail(self, exc: BaseException) -> None:
        """No flush runs: every waiting call gets ``exc`` (none may wait for ever)."""
        with self._lock:
            left, self._waiting, self._flushing = self._waiting, [], False
        _fail(left, exc)


class Database:
    """The web process's engines; queries come from ``server.data.store``.

    ``read`` and ``write`` run on the async engine (PostgreSQL, an in-memory SQLite
    database), or, on a SQLite file, on a sync engine in one thread hop per transaction
    (the write turn taken in that same hop).
    """

    def __init__(self, url: str, *, tracer: Tracer | None = None) -> None:
        """``tracer``: a span around each read and write (see ``_Spans``)."""
        self._span = _Spans(tracer, url)
        # SQLite needs no pre-ping (a file does not drop connections; the ping costs a
        # round trip per session). PostgreSQL keeps SQLAlchemy's pool (5 + 10 overflow:
        # the README's connection count); an in-memory SQLite database has a single static
        # connection; a SQLite file's requests use the sync engine below, with a pool that
        # holds what they use at once (past pool_size, each overflow connection is opened
        # and closed again per session).
        self.engine: AsyncEngine = create_async_engine(
            async_url(url), pool_pre_ping=not _is_sqlite(url))
        if _is_sqlite(url):
            _configure_sqlite(self.engine.sync_engine)
        # A read that later writes fails at once under DEFERRED: writes begin IMMEDIATE.
        self._writer = self.engine.execution_options(sqlite_begin="IMMEDIATE")
        self._write_turn: contextlib.AbstractAsyncContextManager[Any] = (
            AsyncWriteTurn(WriteTurn(_sqlite_path(url))) if _is_sqlite(url)
            else contextlib.nullcontext())
        self._reads = async_sessionmaker(self.engine, expire_on_commit=False)
        self._writes = async_sessionmaker(self._writer, expire_on_commit=False)
        # A SQLite file: the store functions on a sync engine, one thread per connection.
        self._sync: SyncDatabase | None = None
        self._read_threads: ThreadPoolExecutor | None = None
        self._write_threads: ThreadPoolExecutor | None = None
        if _is_sqlite(url) and _sqlite_path(url) is not None:
            self._sync = SyncDatabase(url, pool_size=WEB_POOL_SIZE)
            self._read_threads = ThreadPoolExecutor(WEB_READ_THREADS,
                                                    thread_name_prefix="db-read")
            self._write_threads = ThreadPoolExecutor(WEB_WRITE_THREADS,
                                                     thread_name_prefix="db-write")
        self._groups: dict[Grouped[Any], _WriteGroup] = {}

    @staticmethod
    def _submit(threads: ThreadPoolExecutor | None, call: Callable[[], T]) -> Future[T]:
        assert threads is not None
        # The request's context (its log fields) goes along, as with asyncio.to_thread.
        return threads.submit(contextvars.copy_context().run, call)

    async def _read_in_thread(self, call: Callable[[], T]) -> T:
        """``call`` in a read thread; cancelled, the caller goes at once (a read started
        ends on its own, a read not started never runs)."""
        submitted = self._submit(self._read_threads, call)
        try:
            return await asyncio.wrap_future(submitted)
        finally:
            submitted.cancel()

    async def _write_in_thread(self, fn: Query[P, T], /, *args: P.args,
                               **kwargs: P.kwargs) -> T:
        """``fn`` in a write thread (see ``_outcome`` for a cancelled caller)."""
        assert self._sync is not None
        abandoned = threading.Event()
        submitted = self._submit(self._write_threads, functools.partial(
            self._sync.write_unless, abandoned, fn, *args, **kwargs))
        return await self._outcome(submitted, abandoned)

    @staticmethod
    async def _outcome(submitted: Future[T], abandoned: threading.Event) -> T:
        """What a write in a thread returned. Its caller cancelled before the write is
        made: it is not made (rolled back); cancelled as it commits: it still ends. Either
        way the cancellation goes on only once the thread is done with it, so that a
        caller's clean-up never races its own write."""
        running = asyncio.wrap_future(submitted)
        try:
            return await asyncio.shield(running)
        except asyncio.CancelledError:
            abandoned.set()
            if not submitted.cancel():
                while not running.done():  # however often the caller is cancelled
                    with contextlib.suppress(asyncio.CancelledError):
                        await asyncio.wait([running])
                running.exception()  # seen: _Abandoned, or whatever the write raised
            raise

    async def migrate(self) -> tuple[str | None, str | None]:
        """Bring the schema to this code's head (idempotent; see ``server.data.migrate``)."""
        from server.data import migrate  # Alembic loads only where migrations run

        try:
            async with self._writer.begin() as conn:
                return await conn.run_sync(migrate.upgrade)
        finally:
            await self._release_start_up_connection()

    async def require_current_schema(self) -> None:
        """Raise ``SchemaOutOfDate`` unless the schema is at head (AUTO_MIGRATE=false)."""
        from server.data import migrate

        try:
            async with self.engine.connect() as conn:
                await conn.run_sync(migrate.require_current)
        finally:
            await self._release_start_up_connection()

    async def _release_start_up_connection(self) -> None:
        """On a SQLite file the async engine is for start-up only: close its connection
        (and aiosqlite's thread) once done."""
        if self._sync is not None:
            await self.engine.dispose()

    async def read(self, fn: Query[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a ``store`` query in a read transaction."""
        with self._span("read", fn):
            if self._sync is not None:
                return await self._read_in_thread(
                    functools.partial(self._sync.read, fn, *args, **kwargs))
            async with self._reads() as session:
                return await session.run_sync(lambda s: fn(s, *args, **kwargs))

    async def write(self, fn: Query[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a ``store`` write in one short IMMEDIATE transaction, committed on success."""
        with self._span("write", fn):
            if self._sync is not None:
                return await self._write_in_thread(fn, *args, **kwargs)
            async with self._write_turn, self._writes() as session, session.begin():
                return await session.run_sync(lambda s: fn(s, *args, **kwargs))

    async def write_grouped(self, fn: Grouped[T], /, **kwargs: Any) -> T:
        """``fn(session, [kwargs])[0]`` in a write transaction. On a SQLite file, made
        together with the calls of ``fn`` waiting at that moment (a group commit): one
        write turn, one transaction and one call of ``fn`` for all of them (in the first
        caller's context). Should that call fail, its transaction is rolled back and each
        is made alone, in a savepoint of its own, so that one call's error is only its
        own. SQLite runs one writer at a time for every process: concurrent uploads each
        took a turn of their own, waiting behind each other and the workers. Elsewhere
        (PostgreSQL writes concurrently) one transaction per call."""
        if self._sync is None:
            @functools.wraps(fn)  # its span is named after fn
            def alone(s: Session) -> T:
                return fn(s, [kwargs])[0]

            return await self.write(alone)
        with self._span("write", fn):
            group = self._groups.get(fn)
            if group is None:
                group = self._groups[fn] = _WriteGroup(self._sync, fn)
            abandoned = threading.Event()
            call = _GroupedCall(kwargs, abandoned, contextvars.copy_context())
            if group.add(call):
                try:
                    self._submit(self._write_threads, group.flush)
                except BaseException as exc:  # no thread to run it (shutting down)
                    group.fail(exc)
                    raise
            result: T = await self._outcome(call.future, abandoned)
            return result

    async def ping(self) -> None:
        if self._sync is not None:
            return await self._read_in_thread(self._sync.ping)
        async with self.engine.connect() as conn:
            await conn.exec_driver_sql("SELECT 1")

    async def dispose(self) -> None:
        await self.engine.dispose()
        if self._sync is not None:
            for threads in (self._read_threads, self._write_threads):
                assert threads is not None
                threads.shutdown(wait=False)
            await asyncio.to_thread(self._sync.dispose)


class SyncDatabase:
    """A worker process's sync engine, with the same read/write shape as ``Database``."""

    def __init__(self, url: str, *, pool_size: int | None = None,
                 tracer: Tracer | None = None) -> None:
        """``pool_size``: connections kept open (SQLAlchemy's default of 5 when None);
        ``tracer``: a span around each read and write (see ``_Spans``)."""
        self._span = _Spans(tracer, url)
        pool = {} if pool_size is None else {"pool_size": pool_size}
        self.engine: Engine = create_engine(sync_url(url), pool_pre_ping=not _is_sqlite(url),
                                            **pool)
        if _is_sqlite(url):
            _configure_sqlite(self.engine)
        self._writer = self.engine.execution_options(sqlite_begin="IMMEDIATE")
        self._write_turn: contextlib.AbstractContextManager[Any] = (
            WriteTurn(_sqlite_path(url)) if _is_sqlite(url) else contextlib.nullcontext())
        self._reads = sessionmaker(self.engine, expire_on_commit=False)
        self._writes = sessionmaker(self._writer, expire_on_commit=False)

    def migrate(self, revision: str = "head") -> tuple[str | None, str | None]:
        """Bring the schema up to ``revision`` (idempotent; see ``server.data.migrate``)."""
        from server.data import migrate

        with self._writer.begin() as conn:
            return migrate.upgrade(conn, revision)

    def downgrade(self, revision: str) -> tuple[str | None, str | None]:
        """Step the schema back to ``revision``."""
        from server.data import migrate

        with self._writer.begin() as conn:
            return migrate.downgrade(conn, revision)

    def execute(self, sql: str, params: dict[str, Any] | None = None) -> None:
        """Run one raw statement in a write transaction (operators' and tests' escape hatch)."""
        with self._writer.begin() as conn:
            conn.execute(text(sql), params or {})

    def require_current_schema(self) -> None:
        """Raise ``SchemaOutOfDate`` if the schema is behind this code."""
        from server.data import migrate

        with self.engine.connect() as conn:
            migrate.require_current(conn)

    def current_revision(self) -> str | None:
        from server.data import migrate

        with self.engine.connect() as conn:
            return migrate.current(conn)

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")

    def read(self, fn: Query[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        with self._span("read", fn), self._reads() as session:
            return fn(session, *args, **kwargs)

    def write(self, fn: Query[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        with self._span("write", fn), self._write_turn, self._writes() as session, \
                session.begin():
            return fn(session, *args, **kwargs)

    def write_unless(self, abandoned: threading.Event, fn: Query[P, T], /, *args: P.args,
                     **kwargs: P.kwargs) -> T:
        """``write``, not begun, or rolled back instead of committed, once ``abandoned`` is
        set (raises _Abandoned then)."""
        with self._write_turn:
            if abandoned.is_set():
                raise _Abandoned
            with self._writes() as session, session.begin():
                result = fn(session, *args, **kwargs)
                if abandoned.is_set():
                    raise _Abandoned
                return result

    def write_group(self, take: Callable[[], list[_GroupedCall]], fn: Grouped[Any]) -> None:
        """The calls ``take`` hands over once the write turn is held, in one transaction
        (``Database.write_grouped``). Each call's future gets its result or its error (the
        commit's, if that fails). A call whose caller is gone by the time it is made is
        not made; one whose caller goes after it was made, before the commit, has the
        transaction rolled back and made again without it."""
        made: list[tuple[_GroupedCall, Any]] = []
        try:
            with self._write_turn:
                calls = take()
                alone = False  # the group's call failed: each call by itself
                while True:
                    made = []
                    try:
                        with self._writes() as session, session.begin():
                            live = _unabandoned(calls)
                            if len(live) == 1:  # alone: its error is the transaction's
                                [result] = _call(fn, session, live)
                                made = [(live[0], result)]
                            elif live and alone:
                                made = _each_alone(fn, session, live)
                            elif live:
                                # No savepoint: the transaction holds this group only, so
                                # its rollback undoes what a savepoint's would (a savepoint
                                # and its release were a fifth of an upload group's write).
                                try:
                                    made = list(zip(live, _call(fn, session, live),
                                                    strict=True))
                                except _Abandoned:
                                    raise
                                except Exception:
                                    raise _GroupFailed from None
                            if any(call.abandoned.is_set() for call, _ in made):
                                raise _Abandoned  # rolled back: again, without them
                    except (_Abandoned, _GroupFailed) as retry:
                        # Rolled back: again, without the calls answered already (gone
                        # callers), one by one if the group's call failed.
                        calls = [call for call in calls if not call.future.done()]
                        alone = isinstance(retry, _GroupFailed)
                        continue
                    except BaseException as exc:
                        made = []
                        _fail(calls, exc)
                        if not isinstance(exc, Exception):
                            raise
                    break
        finally:
            for call, result in made:  # committed (even if giving the turn back failed)
                if not call.future.done():
                    call.future.set_result(result)

    def dispose(self) -> None:
        self.engine.dispose()
