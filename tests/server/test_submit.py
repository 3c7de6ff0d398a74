"""Storing an upload: what a request cancelled mid-way leaves behind, and the stage its
job starts in."""

from __future__ import annotations

import asyncio
import secrets
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
import redis.asyncio as aioredis

from server.core import keys, validation
from server.data import store
from server.data.db import Database
from server.infra.settings import Settings
from server.infra.storage import LocalStorage
from server.services import submit
from server.services.context import Services
from tests.factories import jpeg_bytes


async def test_a_request_cancelled_during_the_check_leaves_no_file_in_the_store(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check and the move into the store run in a thread, which a cancelled request
    cannot stop: a file the thread moves in after all, with no row, is removed."""
    storage = LocalStorage(tmp_path / "files")
    storage.ensure_dirs()
    temp = storage.new_temp()
    temp.write_bytes(jpeg_bytes(64, 48))
    upload = SimpleNamespace(path=temp, filename="a.jpg", size=temp.stat().st_size,
                             sha256="0" * 64)
    settings = Settings(redis_url="redis://unused", data_dir=tmp_path)
    state = cast(Services, SimpleNamespace(settings=settings, storage=storage))
    entered, go_on, moved = threading.Event(), threading.Event(), threading.Event()
    real = submit.probe_and_adopt

    def held(*args: Any) -> Any:
        entered.set()
        go_on.wait(10)
        try:
            return real(*args)
        finally:
            moved.set()

    monkeypatch.setattr(submit, "probe_and_adopt", held)
    request = asyncio.create_task(submit.store_file(
        state, "user", upload, validation.UploadOptions(priority="normal", delay_s=0)))
    assert await asyncio.to_thread(entered.wait, 10)
    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request
    go_on.set()  # the thread moves the file in now, after its request is gone
    assert await asyncio.to_thread(moved.wait, 10)
    for _ in range(100):  # the hop's callback runs on the loop just after
        await asyncio.sleep(0.01)
        if not any(p.is_file() for p in storage.originals_dir.rglob("*")):
            break
    assert not temp.exists()
    assert [p for p in storage.originals_dir.rglob("*") if p.is_file()] == []


@pytest.mark.integration
async def test_an_upload_let_in_while_its_queue_was_paused_reads_the_pause_again(
        tmp_path: Path, redis_url: str) -> None:
    """The admission reads the paused queues (``Admission.paused``); if they held the
    job's queue, ``store_file`` reads them again, so that a queue resumed while the body
    came in does not leave a job "paused" in a running queue, which nothing would
    correct. Found running, the admission's reading stands."""
    storage = LocalStorage(tmp_path / "files")
    storage.ensure_dirs()
    db = Database(f"sqlite:///{tmp_path}/t.db")
    await db.migrate()
    client = aioredis.Redis.from_url(redis_url)
    settings = Settings(redis_url=redis_url, data_dir=tmp_path,
                        redis_prefix=f"t{secrets.token_hex(4)}")
    state = cast(Services, SimpleNamespace(settings=settings, storage=storage, db=db,
                                           redis=client))
    user = await db.write(store.create_user, token_hash=secrets.token_hex(32))
    options = validation.UploadOptions(priority="normal", delay_s=0)

    async def stage(paused: frozenset[str]) -> str:
        temp = storage.new_temp()
        temp.write_bytes(jpeg_bytes(64, 48))
        upload = SimpleNamespace(path=temp, filename="a.jpg", size=temp.stat().st_size,
                                 sha256=secrets.token_hex(32))
        stored = await submit.store_file(state, user.id, upload, options, paused=paused)
        return stored.view.job.stage

    try:
        assert await stage(frozenset({"images"})) == "stored"  # resumed since the admission
        await client.sadd(keys.paused_queues(settings.redis_prefix), "images")
        assert await stage(frozenset({"images"})) == "paused"  # still paused
        # Paused since an admission that found it running: the dispatcher holds the job.
        assert await stage(frozenset()) == "stored"
        assert await stage(frozenset({"email"})) == "stored"
    finally:
        await client.delete(keys.paused_queues(settings.redis_prefix))
        await client.aclose()
        await db.dispose()
