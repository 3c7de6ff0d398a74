"""The Node.js peer stack (``bench/node_stack``) run beside Darkroom, and how the driver
talks to either stack.

``running_node()`` starts what ``bench.common.running()`` starts for Darkroom, for the
Node design Darkroom replaces: a private Redis (the same embedded server, on a unix
socket as Darkroom's), the Express + Socket.IO web process and one BullMQ + sharp
worker process. ``Api`` is the one difference the driver sees between the two: where an
upload goes, in which form field, and where the answer names the job.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.common import MULTIPART_TYPE, ROOT, BenchStack, median, medians, multipart
from server.infra.embedded_redis import EmbeddedRedis, free_port
from workers.supervisor import die_with_parent

NODE_DIR = ROOT / "bench" / "node_stack"
_INSTALLED = NODE_DIR / "node_modules" / ".package-lock.json"


@dataclass(frozen=True)
class Api:
    """How the driver uses one stack (sessions are ``POST /api/session`` on both)."""

    name: str
    url: str
    upload_path: str
    upload_field: str
    job_id: Callable[[dict[str, Any]], str]

    async def upload(self, http: httpx.AsyncClient, token: str, data: bytes,
                     name: str = "photo.jpg") -> str:
        """Upload one file; the id the job's Socket.IO events carry."""
        return await self.send(http, token, self.body(data, name))

    def body(self, data: bytes, name: str = "photo.jpg") -> bytes:
        """The multipart body that uploads ``data``: built before a suite's clock starts,
        so that the driver spends its time sending, not encoding (the same bytes for each
        stack but for the field's name)."""
        return multipart(data, name, self.upload_field)

    async def send(self, http: httpx.AsyncClient, token: str, body: bytes) -> str:
        """Post a body from ``body``; the id the job's Socket.IO events carry."""
        response = await http.post(self.upload_path, content=body,
                                   headers={"Authorization": f"Bearer {token}",
                                            "Content-Type": MULTIPART_TYPE})
        if response.status_code not in (200, 202):
            raise RuntimeError(f"{self.name}: upload refused: {response.status_code} "
                               f"{response.text[:200]}")
        return self.job_id(response.json())


def darkroom_api(stack: BenchStack) -> Api:
    return Api("Darkroom", stack.url, "/api/images", "file",
               lambda body: str(body["job"]["id"]))


@dataclass
class NodeStack:
    url: str
    data_dir: Path
    processes: list[subprocess.Popen[bytes]]
    concurrency: int
    """The worker's jobs at a time."""

    @property
    def api(self) -> Api:
        # The BullMQ job id: what the relay puts in job.id.
        return Api("Node", self.url, "/api/images/upload", "image",
                   lambda body: str(body["jobId"]))


def node_unavailable() -> str | None:
    """Why the Node stack cannot run here, or None (after ``npm ci`` if it was needed)."""
    npm = shutil.which("npm")
    if not shutil.which("node") or not npm:
        return "Node.js/npm is not installed here: the Node stack is skipped"
    lock = NODE_DIR / "package-lock.json"
    if not _INSTALLED.exists() or _INSTALLED.stat().st_mtime < lock.stat().st_mtime:
        print("  (npm ci in bench/node_stack)", flush=True)
        done = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--silent"],
                              cwd=NODE_DIR, capture_output=True, text=True)
        if done.returncode != 0:
            return f"npm ci failed in bench/node_stack: {done.stderr.strip()[-300:]}"
    return None


def _wait_ready(url: str, procs: list[subprocess.Popen[bytes]], log: Path,
                timeout: float = 60) -> None:
    """Until the web process answers and counts a worker connected to the queue."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(proc.poll() is not None for proc in procs):
            raise RuntimeError(f"a Node stack process exited while starting:\n"
                               f"{log.read_text()[-2000:]}")
        with contextlib.suppress(httpx.HTTPError, KeyError, ValueError):
            if int(httpx.get(f"{url}/healthz", timeout=2).json()["workers"]) >= 1:
                return
        time.sleep(0.1)
    raise RuntimeError(f"the Node stack did not start:\n{log.read_text()[-2000:]}")


@contextlib.contextmanager
def running_node(concurrency: int | None = None) -> Iterator[NodeStack | None]:
    """A private Redis, the Node web process and one worker process; None, with the
    reason printed, where Node or npm is missing.

    ``concurrency``: the worker's (WORKER_CONCURRENCY); by default one per CPU.
    """
    why_not = node_unavailable()
    if why_not:
        print(f"  {why_not}", flush=True)
        yield None
        return
    node = shutil.which("node") or "node"
    with tempfile.TemporaryDirectory(prefix="darkroom-bench-node-") as name:
        tmp = Path(name)
        data_dir = tmp / "data"
        data_dir.mkdir()
        redis = EmbeddedRedis(tmp / "redis", persistent=False).start()
        port = free_port()
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
        env.update({"REDIS_URL": redis.url, "PORT": str(port), "NODE_ENV": "production"})
        if concurrency is not None:
            env["WORKER_CONCURRENCY"] = str(concurrency)
        # As worker.js reads it: os.cpus().length, which is os.cpu_count().
        jobs = concurrency or os.cpu_count() or 1
        url = f"http://127.0.0.1:{port}"
        log_path = tmp / "node.log"
        log = log_path.open("wb")
        procs: list[subprocess.Popen[bytes]] = []
        try:
            # Both from the data directory: the reference's relative paths resolve there.
            for script in ("server.js", "worker.js"):
                # Each in a session of its own, as a process manager starts them (and as
                # Darkroom's are: bench.common.running).
                procs.append(subprocess.Popen([node, str(NODE_DIR / script)], cwd=data_dir,
                                              env=env, stdout=log, stderr=subprocess.STDOUT,
                                              start_new_session=True,
                                              preexec_fn=die_with_parent))
            _wait_ready(url, procs, log_path)
            yield NodeStack(url, data_dir, procs, jobs)
        finally:
            for proc in reversed(procs):
                proc.terminate()
            for proc in procs:
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
            log.close()
            redis.stop()


# -- side by side ------------------------------------------------------------------------------

def _numeric(run: dict[str, Any]) -> list[str]:
    return [k for k, v in run.items() if isinstance(v, int | float) and k != "uploads"]


def figures(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One stack's runs: each figure's median, the runs, and each figure's range."""
    return {**medians(runs),
            "ranges": {k: [min(r[k] for r in runs), max(r[k] for r in runs)]
                       for k in _numeric(runs[0])}}


def side_by_side(darkroom: list[dict[str, Any]],
                 node: list[dict[str, Any]]) -> dict[str, Any]:
    """Both stacks' figures and, per figure, the ratio Darkroom / Node: the median of the
    runs' ratios (run i of one beside run i of the other, measured one after the other),
    so the machine's drift between runs cancels out, and the ratios' range."""
    out: dict[str, Any] = {"darkroom": figures(darkroom)}
    if not node:
        return out
    out["node"] = figures(node)
    paired = {k: [d[k] / n[k] for d, n in zip(darkroom, node, strict=True) if n[k]]
              for k in _numeric(darkroom[0])}
    out["ratio"] = {k: median(v) for k, v in paired.items() if v}
    out["ratio_ranges"] = {k: [min(v), max(v)] for k, v in paired.items() if v}
    return out
