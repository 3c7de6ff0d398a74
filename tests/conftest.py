"""Shared fixtures: one private Redis per session, real databases, real processes.

- Redis: the bundled redis-server on a free port (or TEST_REDIS_URL, never flushed).
- Databases: a SQLite file in a temp dir, and PostgreSQL when TEST_DATABASE_URL is set
  (a database of our own is created there and dropped afterwards).
- ``stack``: a real uvicorn web process and a real Dramatiq worker process.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import httpx._transports.default as httpx_transports
import pytest
import redis
from sqlalchemy.engine import make_url

from server.data.db import SyncDatabase
from server.infra.embedded_redis import EmbeddedRedis, free_port
from tests.factories import LiveClient

ROOT = Path(__file__).resolve().parents[1]

# Every httpx client builds an SSL context with certifi's CAs (40 ms of CPU here), though
# the tests speak plain HTTP: the tests make thousands of clients, so those with the
# default settings share one (certifi's, whatever the environment said at import). The
# assert fails if httpx's transports stop importing the function under that name.
_create_ssl_context = httpx_transports.create_ssl_context
assert _create_ssl_context is httpx.create_ssl_context
_SSL_CONTEXT = _create_ssl_context(trust_env=False)


def _shared_ssl_context(verify: Any = True, cert: Any = None, trust_env: bool = True) -> Any:
    if verify is True and cert is None and trust_env and not (
            os.environ.get("SSL_CERT_FILE") or os.environ.get("SSL_CERT_DIR")):
        return _SSL_CONTEXT
    return _create_ssl_context(verify=verify, cert=cert, trust_env=trust_env)


httpx_transports.create_ssl_context = _shared_ssl_context


# Fixtures that start Redis, a database or processes: a test that uses one (directly or
# through another fixture) must be marked `integration`, so that `-m "not integration"`
# runs the pure tests alone, quickly and with no process started.
PROCESS_FIXTURES = frozenset({"redis_url", "databases", "database_url", "stack", "http_stack",
                              "browser", "session_leader"})

# The longest test files, longest first (seconds of one run without coverage, `--durations=0`
# summed per file, 2026-12-07). `make test` hands whole files to its workers in collection
# order (`--dist loadfile --no-loadscope-reorder`), so these start first and the run does
# not end waiting for one long file begun last. A file missing here runs in its usual
# place; a stale list only makes the run a little longer, never wrong.
LONGEST_FIRST = (
    "integration/test_failures.py",      # 122 s
    "integration/test_openapi.py",       # 108 s
    "integration/test_queueing.py",      # 80 s
    "web/test_admin_panels.py",          # 61 s
    "workers/test_lifecycle.py",         # 54 s
    "integration/test_live_pipeline.py",  # 50 s
    "integration/test_cli.py",           # 48 s
    "web/test_client.py",                # 47 s
    "integration/test_schedules.py",     # 45 s
    "integration/test_corpus_uploads.py",  # 34 s
    "integration/test_metrics.py",       # 33 s
    "web/test_job_page.py",              # 32 s
)


def _file_rank(item: pytest.Item) -> int:
    path = item.nodeid.split("::", 1)[0].removeprefix("tests/")
    return LONGEST_FIRST.index(path) if path in LONGEST_FIRST else len(LONGEST_FIRST)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    unmarked = [item.nodeid for item in items
                if PROCESS_FIXTURES.intersection(getattr(item, "fixturenames", ()))
                and item.get_closest_marker("integration") is None]
    if unmarked:
        raise pytest.UsageError("tests that start Redis, a database or a process must be "
                                "marked integration:\n  " + "\n  ".join(unmarked))
    # A test whose subject is not the database (Redis, Dramatiq, HTTP guards, pages, the
    # command line's client, logs) runs on SQLite only: a second slow run on PostgreSQL
    # would exercise no other database code.
    once = [item for item in items if item.get_closest_marker("one_database")
            and getattr(item, "callspec", None) is not None
            and item.callspec.params.get("databases", "sqlite") != "sqlite"]
    if once:
        config.hook.pytest_deselected(items=once)
        items[:] = [item for item in items if item not in once]
    items.sort(key=_file_rank)  # stable: each file keeps its own order


@contextlib.contextmanager
def _refusing_processes(nodeid: str) -> Iterator[None]:
    """While it lasts, starting a process (subprocess, or a fork) fails the test."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"{nodeid} starts a process: mark it integration")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(subprocess.Popen, "_execute_child", refuse)
        patch.setattr(os, "fork", refuse)
        yield


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    """A test not marked `integration` may not start a process, in its fixtures (of any
    scope) or in its body (below)."""
    if item.get_closest_marker("integration") is not None:
        return (yield)
    with _refusing_processes(item.nodeid):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    if item.get_closest_marker("integration") is not None:
        if CLIENT_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            with _untraced():
                return (yield)
        return (yield)
    with _refusing_processes(item.nodeid):
        return (yield)


# Fixtures of real web and worker processes that a test drives from outside (HTTP,
# Socket.IO, a browser; `api` is test_openapi's): the code such a test measures runs in
# those processes, each traced on its own.
CLIENT_FIXTURES = frozenset({"stack", "http_stack", "browser", "api"})


@contextlib.contextmanager
def _untraced() -> Iterator[None]:
    """Under `make test`'s coverage, the body of a test that drives processes from outside
    runs untraced in the test process's main thread: tracing its client side (HTTP and
    Socket.IO clients, Hypothesis, the browser's driver) measured little of ours and made
    such tests far slower (four of the longest files: 209 s traced, 145 s not). Only this
    thread's tracer is set aside
    (other threads and what the test's processes run stay traced); fixtures are traced."""
    tracer = sys.gettrace()
    if tracer is None:
        yield
        return
    sys.settrace(None)
    try:
        yield
    finally:
        sys.settrace(tracer)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not os.environ.get("TEST_DATABASE_URL"):
        terminalreporter.write_line(
            "PostgreSQL NOT under test: database tests ran on SQLite only "
            "(set TEST_DATABASE_URL=postgresql://… to run them on PostgreSQL too)",
            yellow=True, bold=True)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    given = os.environ.get("TEST_REDIS_URL")
    if given:
        yield given
        return
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"), persistent=False,
                           use_socket=False).start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """A synchronous client of the session's Redis, closed after the test."""
    made = redis.Redis.from_url(redis_url)
    yield made
    made.close()


def _database_params() -> list[str]:
    return ["sqlite", "postgresql"] if os.environ.get("TEST_DATABASE_URL") else ["sqlite"]


class Databases:
    """Fresh databases of one backend; each stack gets its own, as each deployment has.

    Two web processes on one database but different Redis prefixes would sweep each
    other's jobs onto the wrong queues, so stacks never share one.
    """

    def __init__(self, backend: str, tmp_path_factory: pytest.TempPathFactory) -> None:
        self.backend = backend
        self.tmp_path_factory = tmp_path_factory
        self.created: list[str] = []

    def _admin_dsn(self) -> str:
        base = make_url(os.environ["TEST_DATABASE_URL"])
        return base.set(drivername="postgresql").render_as_string(hide_password=False)

    def new(self) -> str:
        if self.backend == "sqlite":
            return f"sqlite:///{self.tmp_path_factory.mktemp('db') / 'darkroom.db'}"
        import psycopg

        name = f"darkroom_test_{secrets.token_hex(4)}"
        with psycopg.connect(self._admin_dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        base = make_url(os.environ["TEST_DATABASE_URL"])
        return base.set(database=name).render_as_string(hide_password=False)

    def drop_all(self) -> None:
        if not self.created:
            return
        import psycopg

        with psycopg.connect(self._admin_dsn(), autocommit=True) as conn:
            for name in self.created:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session", params=_database_params())
def databases(request: pytest.FixtureRequest,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[Databases]:
    made = Databases(request.param, tmp_path_factory)
    try:
        yield made
    finally:
        made.drop_all()


@pytest.fixture(scope="session")
def database_url(databases: Databases) -> str:
    """The database of the main ``stack``."""
    return databases.new()


@dataclass
class Stack:
    """A running web process and worker process sharing one Redis, database and data dir."""

    url: str
    env: dict[str, str]
    data_dir: Path
    logs: Path
    web: subprocess.Popen[bytes]
    worker: subprocess.Popen[bytes]
    # The I/O worker (webhooks, e-mail), as the Procfile's `io` runs it; None if not started.
    io_worker: subprocess.Popen[bytes] | None = None

    @property
    def port(self) -> int:
        return int(self.env["PORT"])

    def restart_web(self) -> None:
        """Stop the web process and start a new one on the same port."""
        stop(self.web)
        self.web, _ = start_web_process(self.env, self.logs / "web.log", port=self.port)

    def worker_processes(self) -> list[int]:
        """Pids of the Dramatiq worker processes (grandchildren of the supervisor)."""
        return [pid for pid in descendants(self.worker.pid) if _is_dramatiq_worker(pid)]

    def log_tail(self, lines: int = 40) -> str:
        out = []
        for name in ("web.log", "worker.log", "io-worker.log"):
            path = self.logs / name
            if path.exists():
                out.append(f"--- {name} ---\n" + "\n".join(path.read_text().splitlines()[-lines:]))
        return "\n".join(out)


def descendants(pid: int) -> list[int]:
    """All processes below ``pid``, read from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _is_dramatiq_worker(pid: int) -> bool:
    """A Dramatiq worker process, as opposed to the Dramatiq main process above it."""
    try:
        parent = int((Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split())[1])
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        parent_cmd = Path(f"/proc/{parent}/cmdline").read_bytes()
    except (OSError, IndexError, ValueError):
        return False
    return b"dramatiq" in cmd and b"dramatiq" in parent_cmd


def _listening_inodes(port: int) -> set[str]:
    """Socket inodes listening on ``port`` (TCP, IPv4 or IPv6), read from /proc."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as fh:
            for line in fh.readlines()[1:]:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":
                    found.add(fields[9])
    return found


def owns_port(pid: int, port: int) -> bool:
    """Whether ``pid`` (or a process below it) is the one listening on ``port``."""
    wanted = {f"socket:[{inode}]" for inode in _listening_inodes(port)}
    for each in (pid, *descendants(pid)):
        for fd in Path(f"/proc/{each}/fd").glob("*"):
            with contextlib.suppress(OSError):
                if os.readlink(fd) in wanted:
                    return True
    return False


class PortTaken(Exception):
    """The process could not bind its port: another process took it first."""


def _accepts(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:``port`` (a cheap first look)."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def wait_until_serving(proc: subprocess.Popen[bytes], port: int, log: Path, *,
                       logged: int = 0, timeout: float = 30.0) -> None:
    """Wait until ``proc`` itself listens on ``port`` and its /healthz answers 200.

    Raises PortTaken if it exited because the port was taken (its log says so after
    byte ``logged``), RuntimeError with its log if it failed otherwise. Whose the port
    is (/proc) is read only once it accepts connections: read every tenth of a second
    while dozens of processes started, it was about a fifth of the test processes'
    samples in a profile of `make test`.
    """
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            tail = log.read_bytes()[logged:] if log.exists() else b""
            if b"address already in use" in tail.lower():
                raise PortTaken(port)
            raise RuntimeError(f"process exited early with {proc.returncode}\n"
                               f"{tail.decode(errors='replace')[-3000:]}")
        if _accepts(port) and owns_port(proc.pid, port):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
        if time.monotonic() > deadline:
            tail = log.read_bytes()[logged:] if log.exists() else b""
            raise RuntimeError(f"not serving on {port} after {timeout}s\n"
                               f"{tail.decode(errors='replace')[-3000:]}")
        time.sleep(0.1)


def start_serving(launch: Callable[[int], subprocess.Popen[bytes]], log: Path, *,
                  port: int | None = None, timeout: float = 30.0
                  ) -> tuple[subprocess.Popen[bytes], int]:
    """Start a process that serves HTTP on the port it is given, and wait until it does.

    ``launch(port)`` starts it. A port chosen here may be taken by another process before
    ours binds it: then another port is tried. A ``port`` given (a restart) is kept.
    """
    for _ in range(5):
        chosen = port or free_port()
        logged = log.stat().st_size if log.exists() else 0
        proc = launch(chosen)
        try:
            wait_until_serving(proc, chosen, log, logged=logged, timeout=timeout)
            return proc, chosen
        except PortTaken:
            if port:
                raise
        except BaseException:
            stop(proc)
            raise
    raise RuntimeError("no free port could be bound in five tries")


def start_web_process(env: dict[str, str], log: Path, *, port: int | None = None
                      ) -> tuple[subprocess.Popen[bytes], str]:
    """A web process (``python -m server``) with ``env``, serving: (process, its URL)."""
    proc, bound = start_serving(lambda chosen: start_web({**env, "PORT": str(chosen)}, log),
                                log, port=port)
    return proc, f"http://127.0.0.1:{bound}"


def stack_env(redis_url: str, database_url: str, data_dir: Path, port: int,
              **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TEST_", "DARKROOM_"))}
    env.update({
        "REDIS_URL": redis_url,
        "DATABASE_URL": database_url,
        "DATA_DIR": str(data_dir),
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "REDIS_PREFIX": f"dt{secrets.token_hex(4)}",
        "ADMIN_TOKEN": "test-admin-token",
        "LOG_LEVEL": "warning",
        "WORKER_PROCESSES": "1",
        # Every stage reported, however quick: tests follow each one.
        "PROGRESS_INTERVAL_MS": "0",
        # Tests read finished-job counts at once. (They make sessions by the hundred from
        # 127.0.0.1, which RATE_LIMIT_EXEMPT_ADDRESSES leaves out of the per-address limits;
        # tests/integration/test_sessions.py checks those limits.)
        "METRICS_RECOUNT_S": "0",
        "WORKER_THREADS": "2",
        # Equal CPU shares: on CI's two cores, workers at nice 10 (their session groups
        # too) wait behind the other test session's processes and browsers, and checks
        # bound by time flake. tests/workers/test_priority.py starts a stack at 10.
        "WORKER_NICE": "0",
        "PYTHONUNBUFFERED": "1",
    })
    env.update(extra)
    return env


def start_web(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as fh:
        return subprocess.Popen([sys.executable, "-m", "server"], cwd=ROOT, env=env,
                                stdout=fh, stderr=subprocess.STDOUT)


def start_worker(env: dict[str, str], log: Path,
                 args: tuple[str, ...] = ()) -> subprocess.Popen[bytes]:
    """The supervised worker (``python -m workers``), as the Procfile runs it.

    ``args`` go to Dramatiq, e.g. ``("-Q", "images")`` to serve only some queues;
    ``("--io",)`` starts the I/O worker instead.
    """
    with log.open("ab") as fh:
        return subprocess.Popen([sys.executable, "-m", "workers", *args], cwd=ROOT, env=env,
                                stdout=fh, stderr=subprocess.STDOUT)


def start_scheduler(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """A scheduler process, as the Procfile runs it."""
    with log.open("ab") as fh:
        return subprocess.Popen([sys.executable, "-m", "workers.scheduler"], cwd=ROOT, env=env,
                                stdout=fh, stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def running_stack(redis_url: str, database_url: str, base: Path,
                  worker_args: tuple[str, ...] = (), io_worker: bool | None = None,
                  **extra: str) -> Iterator[Stack]:
    """Start a web process, a supervised worker and the I/O worker; stop them on exit.

    ``io_worker``: by default started unless ``worker_args`` limit the worker's queues (a
    stack that serves only some queues leaves the webhook and e-mail ones unserved too).
    """
    data_dir, logs = base / "data", base / "logs"
    data_dir.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    env = stack_env(redis_url, database_url, data_dir, 0, **extra)
    worker = start_worker(env, logs / "worker.log", worker_args)
    io = start_worker(env, logs / "io-worker.log", ("--io",)) \
        if (not worker_args if io_worker is None else io_worker) else None
    try:
        web, url = start_web_process(env, logs / "web.log")
    except BaseException:
        stop(worker)
        if io is not None:
            stop(io)
        raise
    env["PORT"] = url.rsplit(":", 1)[1]
    running = Stack(url, env, data_dir, logs, web, worker, io)
    try:
        yield running
    except BaseException:
        print(running.log_tail())
        raise
    finally:
        stop(running.web)
        if running.io_worker is not None and running.io_worker.poll() is None:
            running.io_worker.terminate()  # both workers stop at once
        stop(running.worker)
        if running.io_worker is not None:
            stop(running.io_worker)


@pytest.fixture(scope="session")
def stack(redis_url: str, database_url: str,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(redis_url, database_url, tmp_path_factory.mktemp("stack")) as running:
        yield running


@pytest.fixture
async def sockets() -> AsyncIterator[list[Any]]:
    """The Socket.IO clients a test opened (``factories.connected``, or a bare
    ``socketio.AsyncClient``), closed after it."""
    clients: list[Any] = []
    yield clients
    for client in clients:
        sio = client.sio if isinstance(client, LiveClient) else client
        if sio.connected:
            await sio.disconnect()


@pytest.fixture
def http_stack(stack: Stack) -> Stack:
    """The stack the ``http`` client talks to: the session's ``stack``. A module that runs
    a stack of its own overrides this fixture to return that one."""
    return stack


@pytest.fixture
async def http(http_stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of ``http_stack``'s web process. It keeps an idle connection 2 s:
    uvicorn closes one after 5 s (``timeout_keep_alive``), httpx's default is the same
    5 s, and a request sent on a connection the server is closing just then fails with
    "Server disconnected without sending a response" (a CI run met it after a test's
    pause)."""
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=20,
                          keepalive_expiry=2.0)
    async with httpx.AsyncClient(base_url=http_stack.url, timeout=30,
                                 limits=limits) as client:
        yield client


@pytest.fixture
def memory_db() -> Iterator[SyncDatabase]:
    """A migrated SQLite database in memory, of this test's own (no file, no process)."""
    database = SyncDatabase("sqlite:///:memory:")
    try:
        database.migrate()
        yield database
    finally:
        database.dispose()
