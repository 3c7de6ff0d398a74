"""Scale: end-to-end images/s with 1, 2 and 4 worker processes, and with 1, 2 and 4 threads.

Each configuration gets a fresh stack (private Redis, SQLite, one web process, the
supervised workers); N uploads of a 12 MP JPEG go in back to back at concurrency 8 and
the figure is N / (first upload start → last ``job:completed`` received), median of runs.
"""

from __future__ import annotations

import asyncio
import time

import httpx

from bench.common import Result, Watcher, median, new_token, photo, running, unique, upload

CONCURRENCY = 8
CONFIGS = [(1, 1), (2, 1), (4, 1), (1, 2), (1, 4)]  # (processes, threads)


async def throughput(url: str, data: bytes, count: int, run: int) -> float:
    """Images per second for ``count`` uploads at concurrency 8, open flow."""
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        token = await new_token(http)
        watcher = await Watcher().connect(url, token)
        try:
            queue: asyncio.Queue[int] = asyncio.Queue()
            for n in range(count):
                queue.put_nowait(n)
            job_ids: list[str] = []

            async def uploader() -> None:
                while not queue.empty():
                    n = queue.get_nowait()
                    body = await upload(http, token, unique(data, run * 100_000 + n))
                    job_ids.append(body["job"]["id"])

            start = time.perf_counter()
            await asyncio.gather(*(uploader() for _ in range(CONCURRENCY)))
            ends = [await watcher.wait(job_id) for job_id in job_ids]
            failed = [j for j in job_ids if watcher.final[j]["job"]["state"] != "completed"]
            if failed:
                raise RuntimeError(f"{len(failed)} jobs did not complete")
            return count / (max(ends) - start)
        finally:
            await watcher.close()


def main(quick: bool = False) -> Result:
    count, runs = (16, 1) if quick else (40, 3)
    data = photo(4000, 3000, seed=12)
    result = Result("scale")
    result.figures["image"] = {"width": 4000, "height": 3000, "bytes": len(data)}
    result.figures["uploads"] = count
    rows = []
    for processes, threads in CONFIGS:
        with running(worker_processes=processes, worker_threads=threads) as stack:
            asyncio.run(throughput(stack.url, data, 4, run=99))  # warm-up: imports, caches
            rates = [asyncio.run(throughput(stack.url, data, count, run)) for run in range(runs)]
        row = {"processes": processes, "threads": threads, "images_per_s": median(rates),
               "runs": rates}
        rows.append(row)
        print(f"  {processes} process(es) x {threads} thread(s): "
              f"{row['images_per_s']:.1f} images/s")
    result.figures["configs"] = rows
    return result


def table(result: Result) -> list[str]:
    lines = ["| worker processes x threads | images/s (12 MP, end to end) |", "|---|---|"]
    for row in result.figures["configs"]:
        lines.append(f"| {row['processes']} x {row['threads']} | {row['images_per_s']:.1f} |")
    return lines
