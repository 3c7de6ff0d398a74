"""Search: a page of jobs found by each filter of ``GET /api/jobs`` and ``GET /api/dlq``.

A database of our own is seeded directly (bulk inserts: SQLAlchemy Core executemany on
SQLite, COPY on PostgreSQL) with the schema the migrations make, so the indexes are
production's: 100 k jobs on a SQLite file, and 1 M on PostgreSQL when BENCH_DATABASE_URL
or TEST_DATABASE_URL is set (a database ``darkroom_bench_<hex>`` is created there and
dropped at the end). 200 users (four heavy ones have a third of the jobs), ids of the
``new_id`` form over 30 days, mostly ``image.process`` jobs with their image rows, a few
webhook and e-mail jobs and one type at 0.01 %, about 3 % failed (each with a dead
letter) and the newest few still queued or active.

Each search is timed as the web process runs it: ``store.list_jobs`` (or
``store.list_dead_letters``) in a read transaction, first page of 50, median and p95
of 20 runs after one warm-up, for an admin (every user's jobs) and some for one plain
user. The plan of any search slower than ``SLOW_MS`` (EXPLAIN ANALYZE on PostgreSQL,
EXPLAIN QUERY PLAN on SQLite) is printed and goes into the results.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import secrets
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, Table, event, insert
from sqlalchemy.engine import make_url

from bench.common import Result, median, percentile
from server.core import lifecycle
from server.core.search import JobSearch
from server.data import store
from server.data.db import SyncDatabase
from server.data.models import Base

LIMIT = 50
USERS = 200
HEAVY_USERS = 4  # with a third of all jobs between them
DAYS = 30
CHUNK = 20_000  # rows generated and inserted at a time
SLOW_MS = 100.0  # a search slower than this (median) has its plan recorded
RARE_TYPE = "report.export"
# (type, share of jobs, share of its jobs that fail)
TYPES = [("image.process", 0.9399, 0.025), ("webhook.deliver", 0.05, 0.10),
         ("email.send", 0.01, 0.06), (RARE_TYPE, 0.0001, 0.2)]
CANCELLED = 0.005
RECENT = 1 / 500  # the newest jobs: some still queued, active or retrying
SKIPPED = "skipped (set BENCH_DATABASE_URL)"


# -- the rows ----------------------------------------------------------------------------------

@dataclass
class Needles:
    """Values taken from the seeded rows, for the searches to look for."""

    job_id: str = ""  # an admin's id searches
    user_id: str = ""  # a plain user (neither heavy nor rare)
    user_job_id: str = ""
    user_filename: str = ""
    filename: str = ""  # rare: a whole filename
    sha256: str = ""
    day_from: datetime = datetime.min
    day_to: datetime = datetime.min


@dataclass
class Chunk:
    jobs: list[dict[str, Any]] = field(default_factory=list)
    images: list[dict[str, Any]] = field(default_factory=list)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)


def _filename(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.55:
        return f"IMG_{rng.randrange(1, 100_000):04d}.jpg"
    if kind < 0.9:
        return f"DSC{rng.randrange(1, 100_000):05d}.JPG"
    return rng.choice(("holiday-{}.heic", "scan_{}.png", "Screenshot {}.png")).format(
        rng.randrange(1, 100_000))


def _error(rng: random.Random, task: str, filename: str) -> dict[str, str]:
    k = rng.randrange(1, 1000)
    if task == "image.process":
        kind, message = rng.choice((
            ("UnidentifiedImageError", f"cannot identify image file '{filename}'"),
            ("ImageTooLarge", f"image is {k * 20}x{k * 15}, over the 50 MP limit"),
            ("TimeoutError", f"stage {rng.choice(('decoding', 'preview'))} timed out "
                             f"after {rng.choice((60, 120))} s"),
            ("WorkerLost", f"the worker stopped while running attempt {rng.randrange(1, 4)} "
                           "of 3"),
            ("OSError", f"image file is truncated ({k} bytes not processed)"),
        ))
    elif task == "webhook.deliver":
        kind, message = rng.choice((
            ("HTTPStatusError", f"POST https://hooks.example-{k}.com/darkroom returned "
                                f"{rng.choice((500, 502, 503, 404, 410))}"),
            ("ConnectTimeout", f"connection to hooks.example-{k}.com timed out after 10 s"),
        ))
    elif task == "email.send":
        kind, message = rng.choice((
            ("SMTPRecipientsRefused", f"recipient user{k}@example.org refused: 550 mailbox "
                                      "unavailable"),
            ("TimeoutError", "connection to smtp.example.com:587 timed out after 30 s"),
        ))
    else:
        kind, message = "ValueError", f"report range {k} is empty"
    return {"type": kind, "message": message}


def _task(pick: float) -> tuple[str, float]:
    """The type of a job (and its failure rate) for ``pick`` in [0, 1)."""
    for task, share, fail_share in TYPES:
        if pick < share:
            return task, fail_share
        pick -= share
    return TYPES[-1][0], TYPES[-1][2]


def _traceback(error: dict[str, str]) -> str:
    return ("Traceback (most recent call last):\n"
            '  File "/app/workers/middleware/lifecycle.py", line 88, in run\n'
            "    result = actor(view)\n"
            '  File "/app/workers/tasks/image.py", line 31, in process_image\n'
            "    outputs = _process(ctx, view, image_id)\n"
            f"{error['type']}: {error['message']}\n")


class Seeder:
    """The rows, in chunks, with increasing ids; remembers the needles as it goes."""

    def __init__(self, jobs: int, seed: int = 7) -> None:
        self.total = jobs
        self.rng = random.Random(seed)
        self.now = datetime.now(UTC).replace(microsecond=0)
        self.start_ms = int((self.now - timedelta(days=DAYS)).timestamp() * 1000)
        self.span_ms = DAYS * 86_400_000 - 60_000  # the newest a minute ago
        heavy = [0.32 / HEAVY_USERS] * HEAVY_USERS
        plain = [self.rng.uniform(0.3, 1.7) for _ in range(USERS - HEAVY_USERS)]
        self.weights = heavy + [0.68 * w / sum(plain) for w in plain]
        self.users = [self._id(self.start_ms - 86_400_000) for _ in range(USERS)]
        # The plain user: the one with the median share of the rest.
        typical = sorted(range(HEAVY_USERS, USERS), key=self.weights.__getitem__)
        self.needles = Needles(user_id=self.users[typical[len(typical) // 2]])
        middle = self.now - timedelta(days=DAYS // 2)
        self.needles.day_from = middle.replace(hour=0, minute=0, second=0)
        self.needles.day_to = self.needles.day_from + timedelta(days=1)
        self.last_image_job: str | None = None
        self.counts = {"users": USERS, "jobs": 0, "images": 0, "dead_letters": 0, "failed": 0}

    def _id(self, ms: int) -> str:
        return f"{ms:012x}{self.rng.randbytes(10).hex()}"

    def user_rows(self) -> list[dict[str, Any]]:
        created = datetime.fromtimestamp((self.start_ms - 86_400_000) / 1000, UTC)
        return [{"id": user, "is_admin": False, "created_at": created} for user in self.users]

    def chunks(self) -> Iterator[Chunk]:
        rng, step = self.rng, self.span_ms / self.total
        recent_from = self.total - max(20, int(self.total * RECENT))
        users = rng.choices(self.users, self.weights, k=self.total)
        chunk = Chunk()
        for i in range(self.total):
            ms = self.start_ms + int(i * step + rng.random() * step * 0.9)
            self._row(chunk, i, ms, users[i], recent=i >= recent_from)
            if len(chunk.jobs) == CHUNK:
                yield chunk
                chunk = Chunk()
        if chunk.jobs:
            yield chunk

    def _row(self, chunk: Chunk, i: int, ms: int, user: str, *, recent: bool) -> None:
        rng = self.rng
        created = datetime.fromtimestamp(ms / 1000, UTC)
        task, fail_share = _task(rng.random())
        queue, priority = {"webhook.deliver": ("io", "normal"), "email.send": ("io", "normal"),
                           RARE_TYPE: ("default", "normal")}.get(task, ("images", "normal"))
        if task == "image.process" and rng.random() < 0.1:
            queue, priority = "images.high", "high"
        job_id = self._id(ms)
        max_attempts = 5 if task == "webhook.deliver" else 3
        job: dict[str, Any] = {
            "id": job_id, "user_id": user, "type": task, "queue": queue, "state": "completed",
            "stage": "done", "progress": 100, "attempt": 1, "max_attempts": max_attempts,
            "priority": priority, "payload": {}, "error": None, "traceback": None,
            "result": None, "image_id": None, "batch_id": None, "parent_id": None,
            "message_id": secrets.token_hex(16), "enqueued": True, "seq": 6,
            "created_at": created, "updated_at": created, "run_at": None,
            "started_at": created + timedelta(seconds=1),
            "finished_at": created + timedelta(seconds=rng.uniform(1.5, 20)),
        }
        filename = _filename(rng)
        roll = rng.random()
        if recent and roll < 0.75:
            state = rng.choice(("queued", "queued", "queued", "active", "retrying"))
        elif roll < fail_share:
            state = "failed"
        elif roll < fail_share + CANCELLED:
            state = "cancelled"
        else:
            state = "completed"
        job["state"] = state
        if state in ("queued", "active", "retrying"):
            job.update(stage={"active": "thumbnail"}.get(state, "stored"),
                       progress=40 if state == "active" else 0,
                       attempt=0 if state == "queued" else 1, seq=2, finished_at=None,
                       started_at=None if state == "queued" else job["started_at"])
            if state == "retrying":
                job.update(error=_error(rng, task, filename),
                           run_at=self.now + timedelta(seconds=30))
        elif state == "failed":
            error = _error(rng, task, filename)
            job.update(stage=lifecycle.FAILED_STAGE, progress=rng.choice((0, 10, 40, 65)),
                       attempt=max_attempts, error=error, traceback=_traceback(error),
                       seq=4 + 2 * max_attempts)
            chunk.dead_letters.append({
                "job_id": job_id, "user_id": user, "type": task, "error_type": error["type"],
                "error_message": error["message"], "traceback": job["traceback"],
                "attempts": max_attempts, "payload": job["payload"],
                "failed_at": job["finished_at"]})
            self.counts["failed"] += 1
        elif state == "cancelled":
            job.update(stage="cancelled", error=lifecycle.cancel_error(), seq=3)
        if task == "image.process":
            image_id = self._id(ms)
            job["payload"] = {"image_id": image_id}
            job["image_id"] = image_id
            if state == "completed":
                job["result"] = {"image_id": image_id}
            width, height = rng.choice(((4000, 3000), (6000, 4000), (3024, 4032), (1920, 1080)))
            sha256 = rng.randbytes(32).hex()
            chunk.images.append({
                "id": image_id, "user_id": user, "status": lifecycle.image_status(state).value,
                "filename": filename, "content_type": "image/jpeg",
                "size_bytes": rng.randrange(200_000, 9_000_000), "sha256": sha256,
                "format": "JPEG", "width": width, "height": height,
                "meta": {"camera": "Canon EOS R6", "orientation": 1}
                if state == "completed" else None,
                "has_thumbnail": state == "completed", "has_preview": state == "completed",
                "job_id": job_id, "created_at": created})
            self.last_image_job = job_id
            if i == self.total * 3 // 10:
                self.needles.filename = filename
            if i == self.total * 4 // 10:
                self.needles.sha256 = sha256
            if user == self.needles.user_id and i >= self.total // 2 \
                    and not self.needles.user_job_id:
                self.needles.user_job_id, self.needles.user_filename = job_id, filename
        elif task == "webhook.deliver":
            job["parent_id"] = self.last_image_job  # the job whose end it announces
            job["payload"] = {"url": f"https://hooks.example-{rng.randrange(1000)}.com/darkroom",
                              "event": "job.completed"}
        elif task == "email.send":
            job["payload"] = {"to": f"user{rng.randrange(1000)}@example.org",
                              "subject": "Your photos are ready"}
        if i == self.total // 2:
            self.needles.job_id = job_id
        chunk.jobs.append(job)


# -- seeding -----------------------------------------------------------------------------------

TABLES: list[tuple[str, Table]] = [(name, Base.metadata.tables[name])
                                   for name in ("jobs", "images", "dead_letters")]


def _seed_sqlite(db: SyncDatabase, seeder: Seeder) -> None:
    with db.engine.begin() as conn:
        conn.execute(insert(Base.metadata.tables["users"]), seeder.user_rows())
        for chunk in seeder.chunks():
            for name, table in TABLES:
                rows = getattr(chunk, name)
                if rows:
                    conn.execute(insert(table), rows)
                seeder.counts[name] += len(rows)


def _seed_postgresql(db: SyncDatabase, seeder: Seeder) -> None:
    """COPY, as psycopg streams it: a million rows by executemany took minutes more."""
    raw = db.engine.raw_connection()
    try:
        conn = raw.driver_connection
        assert conn is not None
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO users (id, is_admin, created_at) VALUES (%s, %s, %s)",
                            [(u["id"], u["is_admin"], u["created_at"])
                             for u in seeder.user_rows()])
            as_json = {name: {c.name for c in table.columns if isinstance(c.type, JSON)}
                       for name, table in TABLES}
            for chunk in seeder.chunks():
                for name, _table in TABLES:
                    rows = getattr(chunk, name)
                    if not rows:
                        continue
                    # The columns the rows give; any other takes its server default.
                    cols, js = list(rows[0]), as_json[name]
                    with cur.copy(f"COPY {name} ({', '.join(cols)}) FROM STDIN") as copy:
                        for row in rows:
                            copy.write_row([json.dumps(row[c]) if c in js and row[c] is not None
                                            else row[c] for c in cols])
                    seeder.counts[name] += len(rows)
        conn.commit()
    finally:
        raw.close()
    # What autovacuum would have done by the time a table is this big: statistics for
    # the planner, and the visibility map for index-only scans.
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE users, jobs, images, dead_letters")


# -- the searches ------------------------------------------------------------------------------

@dataclass
class Search:
    name: str
    user_id: str | None = None  # None: an admin (every user's jobs)
    search: JobSearch = field(default_factory=JobSearch)
    before: str | None = None
    dead_letters: bool = False

    def run(self, db: SyncDatabase) -> int:
        if self.dead_letters:
            return len(db.read(store.list_dead_letters, limit=LIMIT, before=self.before,
                               search=self.search))
        return len(db.read(store.list_jobs, user_id=self.user_id, limit=LIMIT,
                           before=self.before, search=self.search))


def searches(db: SyncDatabase, n: Needles) -> list[Search]:
    first = db.read(store.list_jobs, user_id=None, limit=LIMIT)
    failed = db.read(store.list_jobs, user_id=None, limit=LIMIT,
                     search=JobSearch(state="failed"))
    day = JobSearch(created_from=n.day_from, created_to=n.day_to)
    user = n.user_id
    return [
        Search("no filter"),
        Search("id exact", search=JobSearch(id=n.job_id)),
        Search("id prefix (12 chars)", search=JobSearch(id=n.job_id[:12])),
        Search("short id (last 8 chars)", search=JobSearch(id=n.job_id[-8:])),
        Search("type common (image.process)", search=JobSearch(type="image.process")),
        Search(f"type rare ({RARE_TYPE}, 0.01 %)", search=JobSearch(type=RARE_TYPE)),
        Search("state failed", search=JobSearch(state="failed")),
        Search("queue io", search=JobSearch(queue="io")),
        Search("owner (a plain user)", search=JobSearch(user=user)),
        Search("filename contains, rare", search=JobSearch(filename=n.filename)),
        Search("filename contains, common (dsc)", search=JobSearch(filename="dsc")),
        Search("sha256 prefix (8)", search=JobSearch(sha256=n.sha256[:8])),
        Search("error text (timed out)", search=JobSearch(error="timed out")),
        Search("error text, rare (550 mailbox)", search=JobSearch(error="550 mailbox")),
        Search("time range (one day)", search=day),
        Search("combined: failed + image.process + timed out",
               search=JobSearch(state="failed", type="image.process", error="timed out")),
        Search("second page (no filter)", before=first[-1].job.id),
        Search("second page (state failed)", search=JobSearch(state="failed"),
               before=failed[-1].job.id),
        Search("dead letters (no filter)", dead_letters=True),
        Search("dead letters, error (timed out)", dead_letters=True,
               search=JobSearch(error="timed out")),
        Search("dead letters, error rare (550 mailbox)", dead_letters=True,
               search=JobSearch(error="550 mailbox")),
        Search("user: no filter", user_id=user),
        Search("user: state failed", user_id=user, search=JobSearch(state="failed")),
        Search("user: short id", user_id=user, search=JobSearch(id=n.user_job_id[-8:])),
        Search("user: filename contains, rare", user_id=user,
               search=JobSearch(filename=n.user_filename)),
        Search("user: error text (timed out)", user_id=user,
               search=JobSearch(error="timed out")),
        Search("user: time range (one day)", user_id=user, search=day),
    ]


@contextlib.contextmanager
def _statements(db: SyncDatabase) -> Iterator[list[tuple[str, Any]]]:
    """The statements run meanwhile (SQL and parameters), in order."""
    seen: list[tuple[str, Any]] = []

    def note(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        seen.append((statement, parameters))

    event.listen(db.engine, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        event.remove(db.engine, "before_cursor_execute", note)


def explain(db: SyncDatabase, search: Search) -> str:
    """The plan of the search's main statement as the store made it: EXPLAIN (ANALYZE,
    BUFFERS) on PostgreSQL, EXPLAIN QUERY PLAN on SQLite."""
    with _statements(db) as seen:
        search.run(db)
    # The first SELECT (SQLite's BEGIN comes through here too): the page's own query.
    statement, parameters = next((sql, params) for sql, params in seen
                                 if sql.lstrip().upper().startswith("SELECT"))
    prefix = "EXPLAIN (ANALYZE, BUFFERS) " if db.engine.dialect.name == "postgresql" \
        else "EXPLAIN QUERY PLAN "
    with db.engine.connect() as conn:
        rows = conn.exec_driver_sql(prefix + statement, parameters).all()
    if db.engine.dialect.name == "postgresql":
        return "\n".join(str(row[0]) for row in rows)
    return "\n".join(str(row[-1]) for row in rows)


def measure(db: SyncDatabase, needles: Needles, runs: int) -> tuple[list[dict[str, Any]],
                                                                     dict[str, str]]:
    rows, plans = [], {}
    for search in searches(db, needles):
        found = search.run(db)  # warm-up
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            search.run(db)
            times.append((time.perf_counter() - started) * 1000)
        row: dict[str, Any] = {"search": search.name, "median_ms": median(times),
                               "p95_ms": percentile(times, 95), "found": found,
                               "runs": times}
        rows.append(row)
        print(f"    {search.name}: {row['median_ms']:.1f} ms (p95 {row['p95_ms']:.1f}), "
              f"{found} found", flush=True)
        if row["median_ms"] > SLOW_MS:
            plans[search.name] = explain(db, search)
    return rows, plans


# -- the databases -----------------------------------------------------------------------------

def _postgres_base() -> str | None:
    return os.environ.get("BENCH_DATABASE_URL") or os.environ.get("TEST_DATABASE_URL")


@contextlib.contextmanager
def _sqlite_database() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="darkroom-bench-search-") as name:
        yield f"sqlite:///{Path(name) / 'darkroom.db'}"


@contextlib.contextmanager
def _postgres_database(base: str) -> Iterator[str]:
    """A database of our own beside the one ``base`` names, dropped afterwards."""
    import psycopg

    admin = make_url(base).set(drivername="postgresql").render_as_string(hide_password=False)
    name = f"darkroom_bench_{secrets.token_hex(4)}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(base).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run_database(label: str, url: str, jobs: int, runs: int,
                 seed: Callable[[SyncDatabase, Seeder], None]) -> dict[str, Any]:
    db = SyncDatabase(url)
    try:
        db.migrate()
        seeder = Seeder(jobs)
        started = time.perf_counter()
        seed(db, seeder)
        seconds = time.perf_counter() - started
        print(f"  {label}: {seeder.counts['jobs']:,} jobs, {seeder.counts['images']:,} "
              f"images, {seeder.counts['dead_letters']:,} dead letters seeded in "
              f"{seconds:.1f} s", flush=True)
        rows, plans = measure(db, seeder.needles, runs)
        if plans:
            for name, plan in plans.items():
                print(f"\n  plan of {name!r}:\n" + "\n".join(f"    {line}"
                                                             for line in plan.splitlines()))
        return {"database": label, **seeder.counts, "seed_s": seconds, "searches": rows,
                "plans": plans}
    finally:
        db.dispose()


def main(quick: bool = False) -> Result:
    sqlite_jobs, postgres_jobs, runs = (10_000, 50_000, 5) if quick \
        else (100_000, 1_000_000, 20)
    result = Result("search")
    result.figures = {"limit": LIMIT, "runs": runs, "databases": []}
    with _sqlite_database() as url:
        result.figures["databases"].append(
            run_database("SQLite", url, sqlite_jobs, runs, _seed_sqlite))
    base = _postgres_base()
    if base is None:
        print(f"  PostgreSQL: {SKIPPED}")
        result.figures["databases"].append({"database": "PostgreSQL", "skipped": SKIPPED})
    else:
        with _postgres_database(base) as url:
            result.figures["databases"].append(
                run_database("PostgreSQL", url, postgres_jobs, runs, _seed_postgresql))
    return result


def _count(n: int) -> str:
    return f"{n // 1_000_000} M" if n >= 1_000_000 and n % 1_000_000 == 0 else \
        f"{n // 1000} k" if n >= 1000 and n % 1000 == 0 else f"{n:,}"


def table(result: Result) -> list[str]:
    databases = result.figures["databases"]
    lines = ["| search: database | jobs | images | dead letters | users | seeded in |",
             "|---|---|---|---|---|---|"]
    for d in databases:
        if "skipped" in d:
            lines.append(f"| {d['database']} | {d['skipped']} | | | | |")
        else:
            lines.append(f"| {d['database']} | {d['jobs']:,} | {d['images']:,} | "
                         f"{d['dead_letters']:,} | {d['users']} | {d['seed_s']:.0f} s |")
    for d in databases:
        if "skipped" in d:
            continue
        lines += ["", f"| {d['database']}, {_count(d['jobs'])} jobs: search (first page of "
                      f"{result.figures['limit']}) | median ms | p95 ms |", "|---|---|---|"]
        lines += [f"| {s['search']} | {s['median_ms']:.1f} | {s['p95_ms']:.1f} |"
                  for s in d["searches"]]
    return lines
