"""`make bench`: pipeline speed per image, and upload → completed latency end to end.

Numbers only; nothing here asserts a timing. Results are printed as a table.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from PIL import Image

from bench import scale
from server.embedded_redis import EmbeddedRedis, free_port
from workers import imaging

ROOT = Path(__file__).resolve().parents[1]
SIZES = [(640, 480), (3000, 2000), (4000, 3000), (6000, 4000)]
E2E_UPLOADS = 24


def _photo(width: int, height: int, fmt: str = "JPEG") -> bytes:
    # Noise-free but detailed enough: a gradient plus blocks.
    img = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    img.paste((200, 40, 40), (width // 4, height // 4, width // 2, height // 2))
    buf = io.BytesIO()
    img.save(buf, fmt, quality=90)
    return buf.getvalue()


def bench_pipeline(tmp: Path) -> None:
    print("\n## Pipeline (workers/imaging.process), single thread")
    print(f"{'source':>14} {'runs':>5} {'median ms':>10} {'p95 ms':>8}")
    for width, height in SIZES:
        path = tmp / f"{width}x{height}.jpg"
        path.write_bytes(_photo(width, height))
        runs = []
        for _ in range(7):
            start = time.perf_counter()
            imaging.process(path, max_pixels=50_000_000)
            runs.append((time.perf_counter() - start) * 1000)
        runs.sort()
        print(f"{f'{width}x{height}':>14} {len(runs):>5} {statistics.median(runs):>10.1f} "
              f"{runs[int(len(runs) * 0.95) - 1]:>8.1f}")


async def _e2e(url: str) -> tuple[list[float], list[float]]:
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        token = (await http.post("/api/session")).json()["token"]
        headers = {"Authorization": f"Bearer {token}"}
        accepted, finished = [], []
        jobs: dict[str, float] = {}
        for i in range(E2E_UPLOADS):
            data = _photo(3000 + i, 2000)
            start = time.perf_counter()
            response = await http.post("/api/images", headers=headers,
                                       files={"file": (f"p{i}.jpg", data, "image/jpeg")})
            accepted.append((time.perf_counter() - start) * 1000)
            jobs[response.json()["job"]["id"]] = start
        pending = set(jobs)
        while pending:
            for job_id in list(pending):
                job = (await http.get(f"/api/jobs/{job_id}", headers=headers)).json()
                if job["state"] in ("completed", "failed", "cancelled"):
                    finished.append((time.perf_counter() - jobs[job_id]) * 1000)
                    pending.discard(job_id)
            await asyncio.sleep(0.05)
        return accepted, finished


def bench_end_to_end(tmp: Path) -> None:
    print(f"\n## End to end: {E2E_UPLOADS} uploads of 6 MP JPEGs, one worker (4 threads)")
    redis = EmbeddedRedis(tmp / "redis", persistent=False, use_socket=False).start()
    port = free_port()
    env = {**os.environ, "REDIS_URL": redis.url, "DATA_DIR": str(tmp / "data"),
           "PORT": str(port), "LOG_LEVEL": "warning"}
    env.pop("DATABASE_URL", None)
    web = subprocess.Popen([sys.executable, "-m", "server"], cwd=ROOT, env=env)
    worker = subprocess.Popen([str(Path(sys.executable).parent / "dramatiq"), "workers.main",
                               "-p", "1", "-t", "4"], cwd=ROOT, env=env)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        accepted, finished = asyncio.run(_e2e(url))
        for label, values in (("upload → 202", accepted), ("upload → completed", finished)):
            values.sort()
            print(f"{label:>20}: median {statistics.median(values):7.1f} ms, "
                  f"p95 {values[int(len(values) * 0.95) - 1]:7.1f} ms, max {values[-1]:7.1f} ms")
    finally:
        for proc in (web, worker):
            proc.terminate()
            proc.wait(timeout=30)
        redis.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("suites", nargs="*", help="pipeline, e2e, scale (default: all)")
    parser.add_argument("--quick", action="store_true", help="fewer runs, for a smoke test")
    args = parser.parse_args()
    chosen = args.suites or ["pipeline", "e2e", "scale"]
    with tempfile.TemporaryDirectory(prefix="darkroom-bench-") as name:
        tmp = Path(name)
        if "pipeline" in chosen:
            bench_pipeline(tmp)
        if "e2e" in chosen:
            bench_end_to_end(tmp)
    if "scale" in chosen:
        print("\n## Scale: end to end with more worker processes or threads")
        result = scale.main(quick=args.quick)
        print(f"  results in {result.save()}")
        print("\n".join(scale.table(result)))


if __name__ == "__main__":
    main()
