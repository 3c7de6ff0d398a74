"""Build test data through the same public paths a client uses."""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
from collections.abc import Callable
from typing import Any

import httpx
import socketio
from PIL import Image

FINAL = {"completed", "failed", "cancelled"}


def jpeg_bytes(width: int = 1200, height: int = 900, color: tuple[int, int, int] = (40, 90, 160),
               **save: Any) -> bytes:
    """A real JPEG made by Pillow (a gradient, so it is not trivially compressible)."""
    img = Image.new("RGB", (width, height), color)
    img.paste((color[2], color[0], color[1]), (0, 0, width // 2, height // 2))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=85, **save)
    return buf.getvalue()


async def new_token(http: httpx.AsyncClient) -> str:
    response = await http.post("/api/session")
    assert response.status_code == 201, response.text
    return str(response.json()["token"])


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def upload(http: httpx.AsyncClient, token: str, data: bytes, *,
                 filename: str = "photo.jpg", content_type: str = "image/jpeg",
                 fields: dict[str, str] | None = None) -> httpx.Response:
    return await http.post("/api/images", headers=auth(token), data=fields or {},
                           files={"file": (filename, data, content_type)})


async def wait_final(http: httpx.AsyncClient, token: str, job_id: str,
                     timeout: float = 60.0) -> dict[str, Any]:
    """Poll GET /api/jobs/{id} (the contract's fallback) until the job is final."""
    deadline = time.monotonic() + timeout
    while True:
        job = (await http.get(f"/api/jobs/{job_id}", headers=auth(token))).json()
        if job.get("state") in FINAL:
            return dict(job)
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} not final after {timeout}s: {job}")
        await asyncio.sleep(0.2)


async def assert_each_change_once(http: httpx.AsyncClient, token: str, job_id: str,
                                  events: list[tuple[str, dict[str, Any]]]) -> None:
    """Every stored change of the job (its timeline: progress steps pushed from Redis alone
    are kept there too) arrived exactly once with its seq; anything else received is a
    queue-position refresh (``job:queued``, which the timeline does not keep). Seqs only
    grow, with gaps (``server.core.live``)."""
    response = await http.get(f"/api/jobs/{job_id}/timeline", headers=auth(token))
    assert response.status_code == 200, response.text
    kept = [(e["seq"], e["name"]) for e in response.json()["events"]]
    got = sorted((data["seq"], name) for name, data in events)
    assert len({seq for seq, _ in got}) == len(got), f"a change arrived twice: {got}"
    assert [change for change in got if change in kept] == kept, f"got {got}, stored {kept}"
    assert all(name == "job:queued" for change in got if change not in kept
               for _, name in [change]), f"got {got}, stored {kept}"


class LiveClient:
    """A real ``socketio.AsyncClient`` that records every event it receives, in order."""

    def __init__(self) -> None:
        self.sio = socketio.AsyncClient(reconnection=True, reconnection_delay=0.2,
                                        reconnection_delay_max=1)
        self.events: list[tuple[str, Any]] = []
        self.arrivals: list[float] = []  # wall-clock time each event arrived
        self._changed = asyncio.Event()
        self.sio.on("*", self._record)

    async def _record(self, event: str, data: Any = None) -> None:
        self.events.append((event, data))
        self.arrivals.append(time.time())
        self._changed.set()

    async def connect(self, url: str, token: str | None, **kwargs: Any) -> LiveClient:
        auth_payload = {"token": token} if token is not None else None
        await self.sio.connect(url, auth=auth_payload, wait_timeout=10, **kwargs)
        return self

    async def close(self) -> None:
        await self.sio.disconnect()

    def timed(self, job_id: str) -> list[tuple[float, str, dict[str, Any]]]:
        """(arrival time, name, payload) of one job's events, in arrival order."""
        return [(at, name, data) for at, (name, data) in zip(self.arrivals, self.events,
                                                             strict=True)
                if name.startswith("job:") and data["job"]["id"] == job_id]

    def of_job(self, job_id: str) -> list[tuple[str, dict[str, Any]]]:
        """Events (name, payload) about one job, in arrival order."""
        return [(name, data) for name, data in self.events
                if name.startswith("job:") and data["job"]["id"] == job_id]

    async def wait_for(self, predicate: Callable[[str, Any], bool],
                       timeout: float = 30.0) -> tuple[str, Any]:
        """The first recorded event matching ``predicate``, waiting for it if needed."""
        deadline = time.monotonic() + timeout
        while True:
            for name, data in self.events:
                if predicate(name, data):
                    return name, data
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                got = [(name, (data.get("job") or {}).get("id", ""),
                        (data.get("job") or {}).get("state", ""))
                       if isinstance(data, dict) else (name,) for name, data in self.events]
                raise AssertionError(f"no matching event within {timeout}s; got {len(got)}, "
                                     f"ending with {got[-12:]}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=remaining)

    async def wait_final(self, job_id: str, timeout: float = 60.0) -> tuple[str, Any]:
        return await self.wait_for(
            lambda name, data: name in ("job:completed", "job:failed", "job:cancelled")
            and data["job"]["id"] == job_id, timeout)


async def connected(url: str, token: str, opened: list[LiveClient]) -> LiveClient:
    """A WebSocket client of ``token`` that has had its ``jobs:snapshot``; it goes into
    ``opened`` (the ``sockets`` fixture closes them all after the test)."""
    client = LiveClient()
    opened.append(client)
    await client.connect(url, token, transports=["websocket"])
    await client.wait_for(lambda name, _: name == "jobs:snapshot", timeout=10)
    return client
