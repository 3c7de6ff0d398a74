from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from sqlalchemy import update

from server.core.jobs import JobState
from server.data import store
from server.data.db import SyncDatabase
from server.data.models import Job, utcnow
from server.infra.storage import LocalStorage, Storage
from tests.conftest import Databases
from workers.maintenance import clean_files, purge_old
from workers.scheduler import once_per_minute

pytestmark = pytest.mark.integration

OLD = time.time() - 2 * 3600


@pytest.fixture
def db(databases: Databases) -> Iterator[SyncDatabase]:
    database = SyncDatabase(databases.new())
    database.migrate()
    yield database
    database.dispose()


def _image(db: SyncDatabase, storage: Storage, user_id: str) -> str:
    image_id = secrets.token_hex(16)
    db.write(store.create_image_job, image_id=image_id, user_id=user_id, filename="a.jpg",
             content_type="image/jpeg", size_bytes=3, sha256=secrets.token_hex(32),
             fmt="JPEG", width=1, height=1, task_type="image.process", queue="images",
             max_attempts=1)
    original = storage.original(image_id)
    original.parent.mkdir(parents=True, exist_ok=True)
    original.write_bytes(b"abc")
    storage.write_rendition(image_id, "thumbnail", b"webp")
    return image_id


def _age(*paths: Path) -> None:
    for path in paths:
        os.utime(path, (OLD, OLD))


def test_clean_files_removes_stale_temp_files_and_orphans_only(db: SyncDatabase,
                                                               tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "files")
    storage.ensure_dirs()
    kept = _image(db, storage, "u1")
    _age(storage.original(kept), storage.rendition(kept, "thumbnail"))
    orphan = "f" * 32
    storage.original(orphan).parent.mkdir(parents=True, exist_ok=True)
    storage.original(orphan).write_bytes(b"x")
    storage.write_rendition(orphan, "preview", b"x")
    _age(storage.original(orphan), storage.derived_dir / orphan)
    fresh_orphan = "e" * 32  # an upload in flight: its row is not committed yet
    storage.write_rendition(fresh_orphan, "preview", b"x")
    stale_temp, fresh_temp = storage.new_temp(), storage.new_temp()
    _age(stale_temp)

    clean_files(db, storage)

    assert storage.original(kept).exists() and storage.rendition(kept, "thumbnail").exists()
    assert not storage.original(orphan).exists()
    assert not (storage.derived_dir / orphan).exists()
    assert (storage.derived_dir / fresh_orphan).exists()
    assert not stale_temp.exists() and fresh_temp.exists()


def test_purge_keeps_unfinished_recent_and_dead_lettered(db: SyncDatabase,
                                                         tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "files")
    old_done, old_dead, running, recent = (_image(db, storage, "u1") for _ in range(4))

    def finish(image_id: str, state: JobState, days_ago: int) -> str:
        job_id = db.read(store.get_image, image_id=image_id, user_id=None).job_id
        db.write(lambda s: s.execute(update(Job).where(Job.id == job_id).values(
            state=state.value, finished_at=utcnow() - timedelta(days=days_ago))))
        return str(job_id)

    finish(old_done, JobState.COMPLETED, 40)
    dead_job = finish(old_dead, JobState.ACTIVE, 40)
    db.write(store.dead_letter, job_id=dead_job, error={"type": "X", "message": "y"},
             traceback=None)
    db.write(lambda s: s.execute(update(Job).where(Job.id == dead_job).values(
        finished_at=utcnow() - timedelta(days=40))))
    finish(recent, JobState.COMPLETED, 1)

    assert purge_old(db, storage, retention_days=30) == 1

    def alive(image_id: str) -> bool:
        return db.read(store.get_image, image_id=image_id, user_id=None) is not None

    assert not alive(old_done) and not storage.original(old_done).exists()
    assert not (storage.derived_dir / old_done).exists()
    assert alive(old_dead) and alive(running) and alive(recent)
    assert [entry.job_id for entry, _ in db.read(store.list_dead_letters, limit=10)] == [
        dead_job]


def test_maintenance_runs_once_per_minute_across_schedulers(redis_url: str) -> None:
    """Two schedulers firing in the same minute run the work once; the next minute, again
    once. The clock is injected, so the test cannot straddle a minute boundary."""
    client = redis.Redis.from_url(redis_url)
    prefix = f"sched-{secrets.token_hex(4)}"
    runs: list[str] = []
    now = [1_800_000_000.0 + 59.9]  # the last tenth of a second of a minute

    def clock() -> float:
        return now[0]

    first = once_per_minute(client, prefix, "cleanup", lambda: runs.append("first"),
                            clock=clock)
    second = once_per_minute(client, prefix, "cleanup", lambda: runs.append("second"),
                             clock=clock)
    first()
    second()
    assert runs == ["first"]
    now[0] += 0.2  # the next minute
    second()
    first()
    assert runs == ["first", "second"]
    client.close()
