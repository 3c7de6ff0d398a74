"""`make run`'s launcher: starts everything, prints the URL, and Ctrl-C leaves nothing behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, descendants, start_serving

pytestmark = pytest.mark.integration


def _launch(tmp_path: Path, **extra: str) -> tuple[subprocess.Popen[bytes], str, int]:
    """The launcher on a free port, once its own web process serves there: (the launcher,
    its URL, where its output starts in launcher.log). If another process takes the port
    before the launcher's web process binds it, the launcher is started again on another."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("REDIS_URL", "DATABASE_URL") and not k.startswith("TEST_")}
    env.update({"DATA_DIR": str(tmp_path / "var"), "LOG_LEVEL": "warning",
                "PYTHONUNBUFFERED": "1", **extra})
    log = tmp_path / "launcher.log"

    starts: list[int] = []

    def launch(port: int) -> subprocess.Popen[bytes]:
        starts.append(log.stat().st_size if log.exists() else 0)
        with log.open("ab") as fh:
            return subprocess.Popen([sys.executable, "-m", "server.launcher"], cwd=ROOT,
                                    env={**env, "PORT": str(port)}, stdout=fh,
                                    stderr=subprocess.STDOUT, start_new_session=True)

    # A web process that cannot bind its port exits, and honcho and the launcher with it.
    proc, port = start_serving(launch, log, timeout=60)
    return proc, f"http://127.0.0.1:{port}", starts[-1]


def _wait_ready(proc: subprocess.Popen[bytes], url: str, log: Path, since: int) -> list[str]:
    """The launcher's output lines (from byte ``since``) once it has printed its URL."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        lines = log.read_bytes()[since:].decode(errors="replace").splitlines()
        if any(f"Darkroom is ready at {url}" in line for line in lines):
            return lines
        time.sleep(0.2)
    raise AssertionError("the launcher never printed its URL:\n" + log.read_text())


def _stop(proc: subprocess.Popen[bytes]) -> list[int]:
    """Ctrl-C as a terminal sends it: SIGINT to the launcher's process group."""
    children = descendants(proc.pid)
    os.killpg(proc.pid, signal.SIGINT)
    proc.wait(timeout=60)
    deadline = time.monotonic() + 20
    alive = children
    while alive and time.monotonic() < deadline:
        alive = [pid for pid in children if Path(f"/proc/{pid}").exists()
                 and "zombie" not in _state(pid)]
        time.sleep(0.2)
    return alive


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split("\n")[0].lower()
    except (OSError, IndexError):
        return "zombie"


def _receiver() -> tuple[ThreadingHTTPServer, list[str]]:
    """A local HTTP server answering 204 to POSTs; the list gets each path."""
    paths: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            paths.append(self.path)
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, args=(0.1,), daemon=True).start()
    return server, paths


def _wait_state(url: str, headers: dict[str, str], job_id: str) -> str:
    deadline = time.monotonic() + 30
    state = ""
    while state not in ("completed", "failed") and time.monotonic() < deadline:
        state = httpx.get(f"{url}/api/jobs/{job_id}", headers=headers).json()["state"]
        time.sleep(0.2)
    return state


def test_launcher_runs_everything_and_ctrl_c_stops_it_all(tmp_path: Path) -> None:
    proc, url, since = _launch(tmp_path, WEBHOOK_ALLOW_PRIVATE="true")
    receiver, paths = _receiver()
    try:
        lines = _wait_ready(proc, url, tmp_path / "launcher.log", since)
        assert any("started a private Redis at unix://" in line for line in lines)
        assert (tmp_path / "var" / "darkroom.db").exists()
        token = httpx.post(f"{url}/api/session").json()["token"]
        headers = {"Authorization": f"Bearer {token}"}
        from tests.factories import jpeg_bytes

        job = httpx.post(f"{url}/api/images", headers=headers,
                         files={"file": ("a.jpg", jpeg_bytes(400, 300), "image/jpeg")}).json()
        assert _wait_state(url, headers, job["job"]["id"]) == "completed"
        # The I/O worker runs too (the Procfile's `io`): it is the one that delivers.
        hook = f"http://127.0.0.1:{receiver.server_address[1]}/launched"
        delivery = httpx.post(f"{url}/api/tasks", headers=headers, json={
            "type": "webhook.deliver", "payload": {"url": hook}}).json()
        assert _wait_state(url, headers, delivery["job"]["id"]) == "completed"
        assert paths == ["/launched"]
    finally:
        receiver.shutdown()
        receiver.server_close()
        alive = _stop(proc)
    assert alive == [], f"left running: {alive}"
    assert proc.returncode == 0, "a stop the user asked for is a normal end"


def test_launcher_uses_the_given_redis_and_starts_none(tmp_path: Path, redis_url: str) -> None:
    proc, url, since = _launch(tmp_path, REDIS_URL=redis_url, REDIS_PREFIX="launchertest")
    try:
        lines = _wait_ready(proc, url, tmp_path / "launcher.log", since)
        assert not any("private Redis" in line for line in lines)
        assert not (tmp_path / "var" / "redis").exists()
        assert httpx.get(f"{url}/healthz").json()["redis"] == "ok"
    finally:
        alive = _stop(proc)
    assert alive == []
