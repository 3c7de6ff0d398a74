"""End to end: N uploads at concurrency 8, upload start → ``job:completed`` received.

Medians of three runs. Open flow: eight uploaders send back to back, never waiting for
the work. Closed flow:
each of eight slots waits for its job's ``job:completed`` before its next upload. Both run
against the processes ``make run`` starts, with its defaults (one web process, one worker
process per CPU with WORKER_THREADS threads each), on a fresh private Redis and SQLite.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from bench.common import (
    Result,
    Watcher,
    medians,
    new_token,
    percentile,
    photo,
    running,
    unique,
    upload,
)
from server.infra.settings import Settings

CONCURRENCY = 8
SIZES = {"12 MP JPEG": (4000, 3000), "0.3 MP JPEG": (640, 480)}


async def run_flow(url: str, data: bytes, count: int, *, closed: bool,
                   salt: int) -> dict[str, Any]:
    """One flow of ``count`` uploads; latencies in ms and overall images/s."""
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        token = await new_token(http)
        watcher = await Watcher().connect(url, token)
        try:
            started: dict[str, float] = {}
            next_n = iter(range(count))

            async def slot() -> None:
                for n in next_n:
                    start = time.perf_counter()
                    body = await upload(http, token, unique(data, salt + n))
                    job_id = body["job"]["id"]
                    started[job_id] = start
                    if closed:
                        await watcher.wait(job_id)

            first = time.perf_counter()
            await asyncio.gather(*(slot() for _ in range(CONCURRENCY)))
            ends = {job_id: await watcher.wait(job_id) for job_id in started}
            bad = [j for j in started if watcher.final[j]["job"]["state"] != "completed"]
            if bad:
                raise RuntimeError(f"{len(bad)} jobs did not complete")
            latencies = [(ends[j] - started[j]) * 1000 for j in started]
            return {
                "uploads": count,
                "images_per_s": count / (max(ends.values()) - first),
                "p50_ms": percentile(latencies, 50),
                "p95_ms": percentile(latencies, 95),
                "p99_ms": percentile(latencies, 99),
            }
        finally:
            await watcher.close()


def main(quick: bool = False) -> Result:
    count, runs = (40, 1) if quick else (200, 3)
    result = Result("e2e")
    rows = []
    with running() as stack:
        settings = Settings.from_env(stack.env)
        result.figures["workers"] = {"processes": settings.worker_processes,
                                     "threads": settings.worker_threads}
        for n, (label, (width, height)) in enumerate(SIZES.items()):
            data = photo(width, height, seed=40 + n)
            asyncio.run(run_flow(stack.url, data, 8, closed=False, salt=9_000_000))  # warm-up
            for closed in (False, True):
                flow = medians([asyncio.run(run_flow(
                    stack.url, data, count, closed=closed,
                    salt=n * 1_000_000 + closed * 100_000 + run * 10_000))
                    for run in range(runs)])
                row = {"source": label, "bytes": len(data),
                       "flow": "closed" if closed else "open", **flow}
                rows.append(row)
                print(f"  {label:<12} {row['flow']:<6} {row['images_per_s']:6.1f} images/s  "
                      f"p50 {row['p50_ms']:7.0f} ms  p95 {row['p95_ms']:7.0f}  "
                      f"p99 {row['p99_ms']:7.0f}")
    result.figures["rows"] = rows
    return result
