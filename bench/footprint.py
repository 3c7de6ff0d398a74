"""Footprint: the web process's RSS with 1,000 idle authenticated sockets, and its growth
while a 50 MB upload streams in.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import httpx
import socketio

from bench.common import Result, new_token, photo, running

SOCKETS = 1000
PER_USER = 20  # MAX_SOCKETS_PER_USER's default
UPLOAD_MB = 50


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


async def hold_sockets(url: str, count: int) -> list[socketio.AsyncClient]:
    clients: list[socketio.AsyncClient] = []
    gate = asyncio.Semaphore(50)
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        tokens = [await new_token(http) for _ in range(-(-count // PER_USER))]

    async def one(n: int) -> None:
        async with gate:
            client = socketio.AsyncClient(reconnection=False)
            await client.connect(url, auth={"token": tokens[n // PER_USER]},
                                 transports=["websocket"], wait_timeout=30)
            clients.append(client)

    await asyncio.gather(*(one(n) for n in range(count)))
    return clients


async def idle_sockets(url: str, pid: int) -> dict[str, float]:
    before = rss_mb(pid)
    clients = await hold_sockets(url, SOCKETS)
    await asyncio.sleep(5)  # idle: pings only
    after = rss_mb(pid)
    await asyncio.gather(*(client.disconnect() for client in clients))
    return {"rss_before_mb": before, "rss_with_sockets_mb": after, "sockets": len(clients)}


def big_upload_body(size_mb: int) -> bytes:
    """A valid JPEG padded after its end marker to ``size_mb`` (decoders ignore the rest)."""
    data = photo(1600, 1200, seed=80)
    return data + b"\0" * (size_mb * 1024 * 1024 - len(data) - 4096)


async def upload_growth(url: str, pid: int) -> dict[str, float]:
    body = big_upload_body(UPLOAD_MB)
    peak = [rss_mb(pid)]
    before = peak[0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], rss_mb(pid))
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    async with httpx.AsyncClient(base_url=url, timeout=300) as http:
        token = await new_token(http)
        sampler.start()
        response = await http.post(
            "/api/images", headers={"Authorization": f"Bearer {token}"},
            files={"file": ("big.jpg", body, "image/jpeg")})
        stop.set()
        sampler.join()
    if response.status_code not in (200, 202):
        raise RuntimeError(f"the big upload was refused: {response.status_code}")
    return {"upload_mb": len(body) / 1024 / 1024, "rss_before_mb": before,
            "rss_peak_mb": peak[0], "growth_mb": peak[0] - before}


def main(quick: bool = False) -> Result:
    result = Result("footprint")
    with running(workers=False) as stack:
        sockets = asyncio.run(idle_sockets(stack.url, stack.web_pid))
        print(f"  web RSS {sockets['rss_before_mb']:.0f} MB idle, "
              f"{sockets['rss_with_sockets_mb']:.0f} MB with {SOCKETS} sockets")
    # A fresh web process: memory the sockets freed would hide what the upload takes.
    with running(workers=False, MAX_UPLOAD_MB=str(UPLOAD_MB)) as stack:
        growth = asyncio.run(upload_growth(stack.url, stack.web_pid))
        print(f"  a {growth['upload_mb']:.0f} MB upload grew web RSS by "
              f"{growth['growth_mb']:.1f} MB")
    result.figures.update({"sockets": sockets, "upload": growth})
    return result
