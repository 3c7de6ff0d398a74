"""Profile Darkroom under the end-to-end load: py-spy flame graphs of every process.

    python -m bench.profile                  # 12 MP, open flow, 200 uploads, 8 users
    python -m bench.profile --small --count 300

Starts the stack ``make run`` starts (bench.common.running), sends the uploads of eight
users at concurrency 8, and records each Darkroom process with ``py-spy record`` (native
frames off, idle samples off, subprocesses of the worker supervisor included) while the
load runs. Writes ``bench/results/profiles/<process>.txt``: collapsed stacks (open them in
speedscope.app or feed them to flamegraph.pl for the flame graph), which ``--top`` also
sums by function here.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx

from bench.common import RESULTS, Watcher, new_token, photo, running, unique, upload

PROFILES = RESULTS / "profiles"
CONCURRENCY = 8


async def load(url: str, data: bytes, count: int) -> float:
    """``count`` uploads by eight users, each waiting for nothing; images/s end to end."""
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        tokens = [await new_token(http) for _ in range(CONCURRENCY)]
        watchers = [await Watcher().connect(url, token) for token in tokens]
        todo = iter(range(count))
        jobs: list[tuple[Watcher, str]] = []

        async def slot(user: int) -> None:
            for n in todo:
                body = await upload(http, tokens[user], unique(data, 7_000_000 + n))
                jobs.append((watchers[user], body["job"]["id"]))

        first = time.perf_counter()
        await asyncio.gather(*(slot(u) for u in range(CONCURRENCY)))
        last = max([await watcher.wait(job_id) for watcher, job_id in jobs])
        for watcher in watchers:
            await watcher.close()
        return count / (last - first)


def machine_seconds() -> dict[str, float]:
    """The whole machine's CPU seconds so far (every CPU, from /proc/stat): busy (what every
    process and the kernel's own threads used), idle, iowait (idle with a read or write
    outstanding) and steal (taken by the hypervisor)."""
    fields = [int(n) for n in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, idle, iowait, irq, softirq, steal = fields
    ticks = os.sysconf("SC_CLK_TCK")
    return {"busy": (user + nice + system + irq + softirq) / ticks, "idle": idle / ticks,
            "iowait": iowait / ticks, "steal": steal / ticks}


def top(collapsed: Path, limit: int = 25) -> list[tuple[str, float]]:
    """Share of samples in which each function appears (inclusive), highest first."""
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():  # py-spy now and then writes a garbled frame name
            continue
        n = int(count)
        total += n
        for frame in {_function(frame) for frame in stack.split(";")}:
            inclusive[frame] += n
    return [(name, n / max(1, total)) for name, n in inclusive.most_common(limit)]


def cpu_seconds(pid: int, *, descendants: bool = True) -> float:
    """User + system CPU seconds of a process and (unless told) every live descendant."""
    ticks = os.sysconf("SC_CLK_TCK")
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
            for task in Path(f"/proc/{current}/task").iterdir() if descendants else ():
                children = (task / "children").read_text().split()
                todo.extend(int(child) for child in children)
    return total


def _function(frame: str) -> str:
    """``run (server/x.py:12)`` -> ``run (x.py)``: a function, whatever line it is at."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit('/', 1)[-1].split(':')[0]})" if where else name


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile")
    parser.add_argument("--small", action="store_true", help="0.3 MP photos, not 12 MP")
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--top", type=int, default=30, help="functions to list per process")
    parser.add_argument("--gil", action="store_true",
                        help="sample only the thread holding the GIL (Python's own CPU time)")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="a setting for the stack (repeatable), to compare variants")
    parser.add_argument("--no-spy", action="store_true",
                        help="only the CPU figures, without py-spy's sampling")
    args = parser.parse_args()
    extra = dict(item.split("=", 1) for item in args.env)
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if spy is None:
        raise SystemExit("py-spy not found (it comes with the test extra: make .venv/.test-stamp)")
    PROFILES.mkdir(parents=True, exist_ok=True)
    data = photo(640, 480, seed=41) if args.small else photo(4000, 3000, seed=40)
    with running(**extra) as stack:
        asyncio.run(load(stack.url, data, 16))  # warm-up
        recorders = []
        for name, proc in (("web", stack.processes[0]), ("workers", stack.processes[1])):
            if args.no_spy:
                break
            out = PROFILES / name
            recorders.append((out, subprocess.Popen(
                [spy, "record", "--pid", str(proc.pid), "--subprocesses", "--rate", "200",
                 "--format", "raw", "--output", f"{out}.txt", "--nonblocking",
                 *(["--gil"] if args.gil else [])],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)))
        time.sleep(1.0)
        pids = {"web": stack.processes[0].pid, "workers": stack.processes[1].pid,
                "driver": os.getpid()}

        def cpu(name: str) -> float:
            return cpu_seconds(pids[name], descendants=name != "driver")

        before = {name: cpu(name) for name in pids}
        machine_before = machine_seconds()
        rate = asyncio.run(load(stack.url, data, args.count))
        used = {name: (cpu(name) - before[name]) * 1000 / args.count for name in pids}
        machine = {name: (seconds - machine_before[name]) * 1000 / args.count
                   for name, seconds in machine_seconds().items()}
        for _, recorder in recorders:
            recorder.send_signal(2)  # SIGINT: py-spy writes its output and exits
        for _, recorder in recorders:
            recorder.wait(timeout=60)
    print(f"{rate:.1f} images/s end to end while profiled; CPU ms per image: "
          + ", ".join(f"{name} {ms:.1f}" for name, ms in used.items())
          + " (py-spy's sampling adds a little to each); the whole machine's per image: "
          + ", ".join(f"{name} {ms:.1f}" for name, ms in machine.items()))
    for out, _ in recorders:
        collapsed = Path(f"{out}.txt")
        if not collapsed.exists():
            print(f"{out.name}: no profile written")
            continue
        print(f"\n## {out.name} (inclusive share of samples)")
        for function, share in top(collapsed, args.top):
            print(f"  {share * 100:5.1f} %  {function}")


if __name__ == "__main__":
    main()
