"""Accept, Darkroom beside the Node stack: uploads accepted per second and 202 latency at
concurrency 8 from 8 users, workers running (medians of three runs, alternating stacks).

Every upload is a distinct file (so none is a duplicate) and makes real work for the
workers, which run meanwhile: the web process has to keep answering while the machine
is busy, and while it relays the jobs' events to the users' sockets (each user watches,
as a browser would). Request bodies are built before the clock starts, so the client
spends its time sending, not encoding. After each run, untimed, the stack finishes its
jobs, so the next run (of the other stack) starts on an idle machine.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from bench.common import (
    MULTIPART_TYPE,
    Result,
    Watcher,
    jpeg_of_size,
    new_token,
    percentile,
    running,
    unique,
)
from bench.node import Api, darkroom_api, running_node, side_by_side

CONCURRENCY = 8
USERS = 8
SIZES = {"100 KB JPEG": 100_000, "1.3 MB JPEG": 1_300_000}


async def accept(api: Api, data: bytes, count: int, salt: int) -> dict[str, Any]:
    bodies = [api.body(unique(data, salt + n), f"p{n}.jpg") for n in range(count)]
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(base_url=api.url, timeout=120, limits=limits) as http:
        tokens = [await new_token(http) for _ in range(USERS)]
        watchers = [await Watcher().connect(api.url, token) for token in tokens]
        try:
            latencies: list[float] = []
            refused: list[int] = []
            jobs: list[tuple[Watcher, str]] = []
            todo = iter(bodies)

            async def slot(user: int) -> None:
                headers = {"Authorization": f"Bearer {tokens[user % USERS]}",
                           "Content-Type": MULTIPART_TYPE}
                for body in todo:
                    start = time.perf_counter()
                    response = await http.post(api.upload_path, content=body,
                                               headers=headers)
                    latencies.append((time.perf_counter() - start) * 1000)
                    if response.status_code != 202:
                        refused.append(response.status_code)
                    else:
                        jobs.append((watchers[user % USERS], api.job_id(response.json())))

            first = time.perf_counter()
            await asyncio.gather(*(slot(user) for user in range(CONCURRENCY)))
            elapsed = time.perf_counter() - first
            # Untimed: the stack finishes its work before the next run.
            for watcher, job_id in jobs:
                await watcher.wait(job_id)
        finally:
            await asyncio.gather(*(watcher.close() for watcher in watchers))
    if refused:
        raise RuntimeError(f"{api.name}: {len(refused)} uploads refused: "
                           f"{sorted(set(refused))}")
    return {"uploads": count, "uploads_per_s": count / elapsed,
            "p50_ms": percentile(latencies, 50), "p95_ms": percentile(latencies, 95),
            "p99_ms": percentile(latencies, 99)}


def _line(name: str, f: dict[str, Any]) -> str:
    return (f"    {name:<8} {f['uploads_per_s']:6.1f} uploads/s  202 p50 {f['p50_ms']:6.1f} ms"
            f"  p95 {f['p95_ms']:6.1f}  p99 {f['p99_ms']:6.1f}")


def main(quick: bool = False) -> Result:
    count, runs = (80, 1) if quick else (300, 3)
    result = Result("accept")
    rows = []
    with running() as stack, running_node() as node:
        apis = [darkroom_api(stack)] + ([node.api] if node else [])
        if node is None:
            result.notes.append("accept: Node.js was not available, so the Node stack's "
                                "column is empty.")
        for n, (label, size) in enumerate(SIZES.items()):
            data = jpeg_of_size(size, seed=60 + n)
            for api in apis:
                asyncio.run(accept(api, data, 16, salt=8_000_000 + n * 1000))  # warm-up
            measured: dict[str, list[dict[str, Any]]] = {api.name: [] for api in apis}
            for run in range(runs):
                for api in apis:  # alternating: Darkroom run 1, Node run 1, ...
                    measured[api.name].append(asyncio.run(accept(
                        api, data, count, salt=n * 1_000_000 + run * 10_000)))
            row = {"source": label, "bytes": len(data),
                   **side_by_side(measured["Darkroom"], measured.get("Node", []))}
            rows.append(row)
            print(f"  {label}, {count} uploads x {runs} runs:")
            print(_line("Darkroom", row["darkroom"]))
            if "node" in row:
                print(_line("Node", row["node"]))
                ratio = row["ratio"]
                print(f"    Darkroom/Node: uploads/s x{ratio['uploads_per_s']:.2f}  "
                      f"202 p99 x{ratio['p99_ms']:.2f}", flush=True)
    result.figures["rows"] = rows
    return result
