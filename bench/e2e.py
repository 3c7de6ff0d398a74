"""End to end, Darkroom beside the Node stack: 200 uploads (100 in the closed flow) at
concurrency 8 from 8 users, upload start → ``job:completed`` received; and one user's
uploads, one at a time, to an idle service (the idle flow).

Both stacks run at once, each on a private Redis, as ``make run`` starts Darkroom (its
defaults: one web process, one worker process per CPU with WORKER_THREADS threads each)
and as ``bench/node_stack`` runs the Node design (one web process, one BullMQ worker
process with one job per CPU at a time). The same photos, every upload a distinct file,
the same driver, which builds each flow's request bodies before its clock starts (since
2026-12-08: before, it copied and encoded each one as it sent it, on the same two cores
as the stack under test); the runs alternate (Darkroom run 1, Node run 1, Darkroom run 2, ...), and
each figure is the median of three runs, with the ratio Darkroom / Node as the median of
the runs' ratios.

Each of 8 users has its own token, Socket.IO watcher and upload slot; the watchers run in
a process of their own (``bench.watch``), which only receives, as the users' browsers
would: its receipt times are not held up by the event loop sending the uploads. Open
flow: the slots send back to back, never waiting for the work; also recorded there, what
the uploaders see of the web process under that load: uploads accepted per second and the
202's latency. Closed flow: each slot waits for its job's ``job:completed`` before its
next upload. Idle flow: one user uploads one 0.3 MP photo at a time, each after a pause,
to a service with nothing else to do (what one person waits for). Push: the server's
``published_at`` on ``job:completed`` (when the event was published for the relay) to its
receipt by the watchers' process. Before 2026-12-07's evening the receipt was timed in the
driver's own event loop, busy sending the uploads, for both stacks alike: in the open
flows a subscriber on Redis saw a sixth to a half of that p99 reach Redis.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from bench.common import (
    Receipts,
    Result,
    WatcherProcess,
    new_token,
    percentile,
    photo,
    running,
    unique,
)
from bench.node import Api, darkroom_api, running_node, side_by_side
from server.infra.settings import Settings

CONCURRENCY = 8
USERS = 8
SIZES = {"12 MP JPEG": (4000, 3000), "0.3 MP JPEG": (640, 480)}
SCENARIOS = (("12 MP JPEG", "open"), ("12 MP JPEG", "closed"), ("0.3 MP JPEG", "open"),
             ("0.3 MP JPEG", "idle"))
# Uploads per flow in a full run. The closed flow has no backlog to build, so it is steady
# from the first rounds: 100 uploads (12 rounds of 8) keep the whole suite near 6 minutes
# on 2 cores (200 took 7.8 minutes, the Node stack's closed flow alone 45 s a run).
COUNTS = {"open": 200, "closed": 100, "idle": 8}
# The idle flow: one user, one upload at a time, each after this pause (long enough for
# idle workers to back off to their slowest polls): what one person waits on a quiet
# service, from the upload to its job:completed.
IDLE_PAUSE_S = 2.0


async def run_flow(api: Api, data: bytes, count: int, *, closed: bool,
                   salt: int, idle: bool = False) -> dict[str, Any]:
    """One flow of ``count`` uploads; latencies in ms and overall images/s. ``idle``: one
    upload at a time, each after IDLE_PAUSE_S (its images/s says nothing)."""
    async with httpx.AsyncClient(base_url=api.url, timeout=120) as http:
        tokens = [await new_token(http) for _ in range(1 if idle else USERS)]
        watching = await WatcherProcess.start(api.url, tokens)
        watchers = watching.watchers
        try:
            # Wall-clock times throughout: the watchers' process notes receipts so.
            started: dict[str, float] = {}
            answered: dict[str, float] = {}
            watcher_of: dict[str, Receipts] = {}
            # Built before the clock starts, as the accept suite's are: the driver shares
            # the machine's two cores with the stack, and would otherwise spend some of
            # them copying and encoding each 3.6 MB body as it goes.
            bodies = [api.body(unique(data, salt + n)) for n in range(count)]
            next_n = iter(range(count))

            async def slot(user: int) -> None:
                token, watcher = tokens[user % len(tokens)], watchers[user % len(tokens)]
                for n in next_n:
                    if idle:
                        await asyncio.sleep(IDLE_PAUSE_S)
                    start = time.time()
                    job_id = await api.send(http, token, bodies[n])
                    answered[job_id] = time.time()
                    started[job_id] = start
                    watcher_of[job_id] = watcher
                    if closed or idle:
                        await watcher.wait(job_id)

            first = time.time()
            await asyncio.gather(*(slot(user) for user in range(1 if idle else CONCURRENCY)))
            ends = {job_id: await watcher_of[job_id].wait(job_id) for job_id in started}
            finals = {job_id: watcher_of[job_id].final[job_id] for job_id in started}
            bad = [j for j, final in finals.items() if final["job"]["state"] != "completed"]
            if bad:
                raise RuntimeError(f"{api.name}: {len(bad)} jobs did not complete")
            latencies = [(ends[j] - started[j]) * 1000 for j in started]
            accepts = [(answered[j] - started[j]) * 1000 for j in started]
            pushes = [(ends[j] - float(finals[j]["published_at"])) * 1000
                      for j in started if "published_at" in finals[j]]
            return {
                "uploads": count,
                "images_per_s": count / (max(ends.values()) - first),
                "p50_ms": percentile(latencies, 50),
                "p95_ms": percentile(latencies, 95),
                "p99_ms": percentile(latencies, 99),
                "uploads_per_s": count / (max(answered.values()) - first),
                "accept_p50_ms": percentile(accepts, 50),
                "accept_p99_ms": percentile(accepts, 99),
                "push_p50_ms": percentile(pushes, 50),
                "push_p99_ms": percentile(pushes, 99),
            }
        finally:
            await watching.close()


def _line(name: str, f: dict[str, Any], *, paced: bool = False) -> str:
    if paced:  # the idle flow: only what one upload waits counts
        return (f"    {name:<8} upload to done p50 {f['p50_ms']:5.0f} ms  p99 "
                f"{f['p99_ms']:5.0f}  | 202 p50 {f['accept_p50_ms']:5.0f} ms  | push p99 "
                f"{f['push_p99_ms']:6.1f} ms")
    return (f"    {name:<8} {f['images_per_s']:6.1f} images/s  p50 {f['p50_ms']:6.0f} ms  "
            f"p99 {f['p99_ms']:6.0f}  | accepted {f['uploads_per_s']:6.1f}/s  "
            f"202 p50 {f['accept_p50_ms']:5.0f} ms  p99 {f['accept_p99_ms']:5.0f}  "
            f"| push p99 {f['push_p99_ms']:6.1f} ms")


def main(quick: bool = False) -> Result:
    runs = 1 if quick else 3
    result = Result("e2e")
    rows = []
    with running() as stack, running_node() as node:
        settings = Settings.from_env(stack.env)
        result.figures["workers"] = {"processes": settings.worker_processes,
                                     "threads": settings.worker_threads}
        apis = [darkroom_api(stack)]
        if node is None:
            result.notes.append("e2e: Node.js was not available, so the Node stack's "
                                "column is empty.")
        else:
            apis.append(node.api)
            result.figures["node_workers"] = {"processes": 1,
                                              "concurrency": node.concurrency}
        photos = {label: photo(w, h, seed=40 + n) for n, (label, (w, h)) in
                  enumerate(SIZES.items())}
        warm = set()
        for n, (label, flow) in enumerate(SCENARIOS):
            data = photos[label]
            count = min(40, COUNTS[flow]) if quick else COUNTS[flow]
            if label not in warm:
                warm.add(label)
                for api in apis:
                    asyncio.run(run_flow(api, data, 8, closed=False, salt=9_000_000))
            measured: dict[str, list[dict[str, Any]]] = {api.name: [] for api in apis}
            for run in range(runs):
                for api in apis:  # alternating: Darkroom run 1, Node run 1, ...
                    measured[api.name].append(asyncio.run(run_flow(
                        api, data, count, closed=flow == "closed", idle=flow == "idle",
                        salt=n * 1_000_000 + run * 10_000)))
            row = {"source": label, "bytes": len(data), "flow": flow,
                   **side_by_side(measured["Darkroom"], measured.get("Node", []))}
            rows.append(row)
            print(f"  {label} {flow} flow, {count} uploads x {runs} runs:")
            paced = flow == "idle"
            print(_line("Darkroom", row["darkroom"], paced=paced))
            if "node" in row:
                print(_line("Node", row["node"], paced=paced))
                ratio = row["ratio"]
                print(f"    Darkroom/Node: p50 x{ratio['p50_ms']:.2f}" if paced else
                      f"    Darkroom/Node: images/s x{ratio['images_per_s']:.2f}  "
                      f"p50 x{ratio['p50_ms']:.2f}  accepted/s "
                      f"x{ratio['uploads_per_s']:.2f}  push p99 x{ratio['push_p99_ms']:.2f}",
                      flush=True)
    result.figures["rows"] = rows
    return result
