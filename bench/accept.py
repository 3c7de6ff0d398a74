"""Accept: uploads accepted per second and 202 latency at concurrency 8, workers running
(medians of three runs).

Every upload is a distinct file (so none is a duplicate) and makes real work for the
worker, which runs meanwhile: the web process has to keep answering while the machine
is busy. Request bodies are built before the clock starts, so the client spends its
time sending, not encoding.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from bench.common import Result, jpeg_of_size, medians, new_token, percentile, running, unique

CONCURRENCY = 8
SIZES = {"100 KB JPEG": 100_000, "1.3 MB JPEG": 1_300_000}
_BOUNDARY = "darkroom-bench-boundary"


def multipart(data: bytes, name: str) -> bytes:
    return (f"--{_BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"{name}\"\r\nContent-Type: image/jpeg\r\n\r\n").encode() + data + \
        f"\r\n--{_BOUNDARY}--\r\n".encode()


async def accept(url: str, data: bytes, count: int, salt: int) -> dict[str, Any]:
    bodies = [multipart(unique(data, salt + n), f"p{n}.jpg") for n in range(count)]
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
        token = await new_token(http)
        headers = {"Authorization": f"Bearer {token}",
                   "Content-Type": f"multipart/form-data; boundary={_BOUNDARY}"}
        latencies: list[float] = []
        refused: list[int] = []
        todo = iter(bodies)

        async def slot() -> None:
            for body in todo:
                start = time.perf_counter()
                response = await http.post("/api/images", content=body, headers=headers)
                latencies.append((time.perf_counter() - start) * 1000)
                if response.status_code != 202:
                    refused.append(response.status_code)

        first = time.perf_counter()
        await asyncio.gather(*(slot() for _ in range(CONCURRENCY)))
        elapsed = time.perf_counter() - first
    if refused:
        raise RuntimeError(f"{len(refused)} uploads refused: {sorted(set(refused))}")
    return {"uploads": count, "uploads_per_s": count / elapsed,
            "p50_ms": percentile(latencies, 50), "p95_ms": percentile(latencies, 95),
            "p99_ms": percentile(latencies, 99)}


def main(quick: bool = False) -> Result:
    count, runs = (80, 1) if quick else (300, 3)
    result = Result("accept")
    rows = []
    with running() as stack:
        for n, (label, size) in enumerate(SIZES.items()):
            data = jpeg_of_size(size, seed=60 + n)
            asyncio.run(accept(stack.url, data, 16, salt=8_000_000 + n * 1000))  # warm-up
            row = {"source": label, "bytes": len(data), **medians([
                asyncio.run(accept(stack.url, data, count, salt=n * 1_000_000 + run * 10_000))
                for run in range(runs)])}
            rows.append(row)
            print(f"  {label:<12} {row['uploads_per_s']:6.1f} uploads/s  "
                  f"202 p50 {row['p50_ms']:6.1f} ms  p95 {row['p95_ms']:6.1f}  "
                  f"p99 {row['p99_ms']:6.1f}")
    result.figures["rows"] = rows
    return result
