"""Storing an upload: what a request cancelled mid-way leaves behind."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from server.core import validation
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
