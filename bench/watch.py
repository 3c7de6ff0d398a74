"""The e2e flows' watchers, in a process of their own (``bench.common.WatcherProcess``).

    python -m bench.watch URL TOKEN [TOKEN ...]

Connects one Socket.IO watcher per token, prints ``{"ready": true}`` once all are
connected (each has had its ``jobs:snapshot``), then one JSON line per job's final event:
``{"watcher": n, "at": wall-clock receipt, "job": {"id", "state"}, "published_at"}``, until
its stdin closes. It only receives, so its receipt times are a quiet client's.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from bench.common import Watcher


def _reporter(n: int) -> Callable[[str, float, dict[str, Any]], None]:
    def report(job_id: str, at: float, data: dict[str, Any]) -> None:
        # Only what the driver reads: short lines, so that the pipe stays far from full
        # while the driver's loop is busy (a blocked write would delay the next receipts).
        seen: dict[str, Any] = {"watcher": n, "at": at,
                                "job": {"id": job_id, "state": data["job"]["state"]}}
        if "published_at" in data:
            seen["published_at"] = data["published_at"]
        sys.stdout.write(json.dumps(seen) + "\n")
        sys.stdout.flush()
    return report


async def main(url: str, tokens: list[str]) -> None:
    watchers = [await Watcher(clock=time.time, on_final=_reporter(n)).connect(url, token)
                for n, token in enumerate(tokens)]
    try:
        print(json.dumps({"ready": True}), flush=True)
        # Until the driver closes our stdin (read in a thread: the loop keeps receiving).
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.buffer.read)
    finally:
        await asyncio.gather(*(watcher.close() for watcher in watchers))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2:]))
