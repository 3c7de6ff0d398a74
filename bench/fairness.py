"""Fairness: user B's one upload while user A's backlog of 120 photos waits, against B alone.

One stack with `make run`'s defaults. B alone: B uploads one 12 MP JPEG into idle workers;
the figure is upload start → B's ``job:completed`` received. Behind a backlog: A uploads
120 (three batches of 40 at concurrency 8, as the issue's attacker did), then B uploads
one; same figure for B. Medians over runs; the ratio says what A's backlog costs B (first
come, first served, B waited for all of A's jobs: 5.9 s against 0.2-0.3 s alone).
"""

from __future__ import annotations

import asyncio
import time

import httpx

from bench.common import Result, Watcher, median, new_token, photo, running, unique, upload

CONCURRENCY = 8


async def _b_latency(http: httpx.AsyncClient, url: str, data: bytes, n: int) -> float:
    token = await new_token(http)
    watcher = await Watcher().connect(url, token)
    try:
        start = time.perf_counter()
        body = await upload(http, token, unique(data, n))
        done = await watcher.wait(body["job"]["id"])
        if watcher.final[body["job"]["id"]]["job"]["state"] != "completed":
            raise RuntimeError("B's job did not complete")
        return done - start
    finally:
        await watcher.close()


async def _behind_backlog(url: str, data: bytes, backlog: int, run: int) -> float:
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        heavy = await new_token(http)
        watcher = await Watcher().connect(url, heavy)
        try:
            job_ids: list[str] = []
            for batch in range(3):
                queue: asyncio.Queue[int] = asyncio.Queue()
                for n in range(backlog // 3):
                    queue.put_nowait(n)

                async def uploader(queue: asyncio.Queue[int] = queue,
                                   batch: int = batch) -> None:
                    while not queue.empty():
                        n = queue.get_nowait()
                        body = await upload(http, heavy,
                                            unique(data, run * 1_000_000 + batch * 1000 + n))
                        job_ids.append(body["job"]["id"])

                await asyncio.gather(*(uploader() for _ in range(CONCURRENCY)))
            latency = await _b_latency(http, url, data, run * 1_000_000 + 999_999)
            for job_id in job_ids:  # the backlog drains before the next run
                await watcher.wait(job_id)
            return latency
        finally:
            await watcher.close()


async def _alone(url: str, data: bytes, run: int) -> float:
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        return await _b_latency(http, url, data, 5_000_000 + run)


def main(quick: bool = False) -> Result:
    backlog, runs = (30, 1) if quick else (120, 3)
    data = photo(4000, 3000, seed=21)
    result = Result("fairness")
    with running() as stack:
        asyncio.run(_alone(stack.url, data, 99))  # warm-up: imports, caches
        alone = [asyncio.run(_alone(stack.url, data, run)) for run in range(runs)]
        behind = [asyncio.run(_behind_backlog(stack.url, data, backlog, run))
                  for run in range(runs)]
    result.figures = {
        "image": {"width": 4000, "height": 3000, "bytes": len(data)},
        "backlog": backlog,
        "alone_ms": median(alone) * 1000, "alone_runs_ms": [v * 1000 for v in alone],
        "behind_ms": median(behind) * 1000, "behind_runs_ms": [v * 1000 for v in behind],
        "ratio": median(behind) / median(alone),
    }
    print(f"  B alone {result.figures['alone_ms']:.0f} ms; behind A's {backlog}: "
          f"{result.figures['behind_ms']:.0f} ms ({result.figures['ratio']:.1f} x)")
    return result


def table(result: Result) -> list[str]:
    f = result.figures
    return ["| fairness (12 MP) | B's upload → done, ms |", "|---|---|",
            f"| B alone | {f['alone_ms']:.0f} |",
            f"| B behind A's backlog of {f['backlog']} | {f['behind_ms']:.0f} "
            f"({f['ratio']:.1f} x alone) |"]
