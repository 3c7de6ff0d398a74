"""Push delay: the worker's publish of ``job:completed`` → the Socket.IO client's receipt.

Every event carries ``published_at`` (the publisher's wall clock at publish); the
subscriber subtracts it from its own clock at receipt (same machine, same clock). Measured
with only the subscriber connected, and with 500 sockets of other users connected too.
The other sockets and the uploads come from processes of their own, as other browsers and
the uploading app would: the subscriber's process only receives, so its own event loop is
not what is measured.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from typing import Any

import httpx
import socketio

from bench.common import (
    Result,
    medians,
    new_token,
    percentile,
    photo,
    running,
    unique,
    upload,
)

OTHERS = (0, 500)
# Uploads per second while measuring: steady work for the workers and the relay.
RATE_PER_S = 20


async def idle_sockets(url: str, count: int) -> list[socketio.AsyncClient]:
    """``count`` connected sockets, each of a user of its own."""
    clients: list[socketio.AsyncClient] = []
    gate = asyncio.Semaphore(50)
    # A connection waits idle while its socket connects; uvicorn closes idle ones after
    # 5 s, httpx's default reuse limit: kept shorter, a reused one is never being closed.
    # (httpx's other defaults as they are; the gate keeps 50 requests at once.)
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=20,
                          keepalive_expiry=2.0)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:

        async def one() -> None:
            async with gate:
                token = await new_token(http)
                client = socketio.AsyncClient(reconnection=False)
                await client.connect(url, auth={"token": token}, transports=["websocket"],
                                     wait_timeout=30)
                clients.append(client)

        await asyncio.gather(*(one() for _ in range(count)))
    return clients


def _hold_crowd(url: str, count: int, ready: Any, done: Any) -> None:
    """In a child process: hold ``count`` sockets until told to stop."""

    async def hold() -> None:
        crowd = await idle_sockets(url, count)
        ready.set()
        await asyncio.to_thread(done.wait)
        await asyncio.gather(*(client.disconnect() for client in crowd))

    asyncio.run(hold())


def _upload_all(url: str, token: str, data: bytes, count: int, salt: int) -> None:
    """In a child process: ``count`` uploads at a steady RATE_PER_S, so the service has
    work going on throughout; the subscriber's process does nothing but receive."""

    async def run() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            started = time.monotonic()
            for n in range(count):
                await asyncio.sleep(max(0.0, started + n / RATE_PER_S - time.monotonic()))
                await upload(http, token, unique(data, salt + n))

    asyncio.run(run())


async def measure(url: str, data: bytes, count: int, others: int) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    ready, stop = context.Event(), context.Event()
    holder = context.Process(target=_hold_crowd, args=(url, others, ready, stop), daemon=True)
    holder.start()
    if not await asyncio.to_thread(ready.wait, 120):
        raise RuntimeError("the other sockets did not connect")
    delays: list[float] = []
    all_done = asyncio.Event()
    sio = socketio.AsyncClient(reconnection=False)

    async def completed(payload: Any) -> None:
        received = time.time()
        delays.append((received - float(payload["published_at"])) * 1000)
        if len(delays) >= count:
            all_done.set()

    sio.on("job:completed", completed)
    try:
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            token = await new_token(http)
        await sio.connect(url, auth={"token": token}, transports=["websocket"],
                          wait_timeout=30)
        # The uploads come from another process: this one only receives, as a browser would.
        uploader = context.Process(target=_upload_all,
                                   args=(url, token, data, count, others * 10_000))
        uploader.start()
        await asyncio.wait_for(all_done.wait(), 300)
        await asyncio.to_thread(uploader.join, 60)
    finally:
        await sio.disconnect()
        stop.set()
        await asyncio.to_thread(holder.join, 60)
    return {"other_sockets": others, "events": len(delays),
            "p50_ms": percentile(delays, 50), "p99_ms": percentile(delays, 99),
            "max_ms": max(delays)}


def main(quick: bool = False) -> Result:
    count, runs = (40, 1) if quick else (200, 3)
    result = Result("push")
    data = photo(640, 480, seed=70)
    rows = []
    with running() as stack:
        asyncio.run(measure(stack.url, data, 8, 0))  # warm-up
        for others in OTHERS:
            row = {"other_sockets": others, **medians(
                [asyncio.run(measure(stack.url, data, count, others)) for _ in range(runs)])}
            rows.append(row)
            print(f"  {others:>4} other sockets: p50 {row['p50_ms']:5.2f} ms  "
                  f"p99 {row['p99_ms']:5.2f} ms  ({row['events']} events)")
    result.figures["rows"] = rows
    return result
