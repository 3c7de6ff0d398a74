"""The e2e flows' watchers, in a process of their own (``bench.common.WatcherProcess``).

    python -m bench.watch URL TOKEN [TOKEN ...]

Connects one Socket.IO watcher per token, prints ``{"ready": true}`` once all are
connected (each has had its ``jobs:snapshot``), then one JSON line per job's final event:
``{"watcher": n, "job": id, "at": wall-clock receipt, "event": payload}``, until its stdin
closes. It only receives, so its receipt times are a quiet client's.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from bench.common import Watcher


def _reporter(n: int) -> Any:
    def report(job_id: str, at: float, data: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps({"watcher": n, "job": job_id, "at": at, "event": data})
                         + "\n")
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
