"""``make run``: start the whole service on one machine with nothing configured.

Starts a private Redis (unless REDIS_URL is set), migrates the database schema, runs
the Procfile's processes with honcho and prints the URL. Ctrl-C stops all of it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from server.data.db import SyncDatabase
from server.infra import logs
from server.infra.embedded_redis import EmbeddedRedis
from server.infra.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
_READY_TIMEOUT_S = 60.0
# The Procfile's long-running processes; its `release:` step (migrate) ran above already.
# `io` is the I/O worker: webhook and e-mail jobs, on threads image jobs never wait for.
LONG_RUNNING = ("web", "worker", "io", "scheduler")


def _announce_when_ready(url: str, stop: threading.Event) -> None:
    deadline = time.monotonic() + _READY_TIMEOUT_S
    while not stop.is_set() and time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:
                if response.status == 200:
                    print(f"\n  Darkroom is ready at {url}  (Ctrl-C stops everything)\n",
                          flush=True)
                    return
        except OSError:
            pass
        stop.wait(0.5)


def main() -> int:
    settings = Settings.from_env()
    logs.configure(settings.log_level, settings.log_format)
    env = dict(os.environ)
    env["DATA_DIR"] = str(settings.data_dir)
    # Children find `python` and `dramatiq` of this environment first.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    embedded: EmbeddedRedis | None = None
    if not settings.redis_url:
        embedded = EmbeddedRedis(settings.data_dir / "redis").start()
        env["REDIS_URL"] = embedded.url
        print(f"darkroom: started a private Redis at {embedded.url}", flush=True)
    try:
        database = SyncDatabase(settings.database_url)
        database.migrate()
        database.dispose()
        shown_host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
        url = f"http://{shown_host}:{settings.port}"
        stop = threading.Event()
        threading.Thread(target=_announce_when_ready, args=(url, stop), daemon=True).start()
        honcho = subprocess.Popen(
            [sys.executable, "-m", "honcho", "start", "-f", str(ROOT / "Procfile"),
             "-d", str(ROOT), "-p", str(settings.port), *LONG_RUNNING],
            env=env,
        )
        # Ctrl-C in a terminal reaches honcho directly too; a signal sent to this process
        # alone is passed on. Either way honcho stops its children (terminate is idempotent).
        asked = threading.Event()

        def on_signal(*_: object) -> None:
            asked.set()
            honcho.terminate()

        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, on_signal)
        code = honcho.wait()
        stop.set()
        # A stop the user asked for is a normal end (make would call it an error).
        return 0 if asked.is_set() or code in (-signal.SIGINT, -signal.SIGTERM) else code
    finally:
        if embedded is not None:
            embedded.stop()
            print("darkroom: private Redis stopped", flush=True)


if __name__ == "__main__":
    sys.exit(main())
