"""What every benchmark shares: test images, statistics, results on disk, a running stack."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import socketio
from PIL import Image, ImageDraw, ImageFilter

from server.infra.embedded_redis import EmbeddedRedis, free_port
from server.infra.settings import Settings
from workers.supervisor import die_with_parent

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
FINAL_EVENTS = ("job:completed", "job:failed", "job:cancelled")


# -- images ------------------------------------------------------------------------------------

def photo_image(width: int, height: int, seed: int = 0) -> Image.Image:
    """A photo-like RGB picture: smooth light, shapes with edges, texture and sensor grain.

    Flat synthetic images decode and compress unrealistically fast; this one has about the
    entropy of a phone photo: as a JPEG at quality 90, about 0.3 bytes per pixel (a 12 MP
    one is some 3.6 MB), and entropy decoding is most of a JPEG's decoding time.
    """
    rng = random.Random(seed)
    small = Image.new("RGB", (64, 48))
    small.putdata([(rng.randrange(40, 220), rng.randrange(40, 220), rng.randrange(40, 220))
                   for _ in range(64 * 48)])
    img = small.resize((width, height), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(img)
    for _ in range(40):
        x, y = rng.randrange(width), rng.randrange(height)
        r = rng.randrange(min(width, height) // 40, min(width, height) // 6)
        color = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        if rng.random() < 0.5:
            draw.ellipse((x - r, y - r, x + r, y + r), fill=color)
        else:
            draw.rectangle((x - r, y - r // 2, x + r, y + r // 2), fill=color)
    img = img.filter(ImageFilter.GaussianBlur(1.2))
    texture = Image.merge("RGB", [Image.effect_noise((max(1, width // 3), max(1, height // 3)),
                                                     60) for _ in range(3)])
    img = Image.blend(img, texture.resize((width, height), Image.Resampling.BICUBIC), 0.25)
    grain = Image.merge("RGB", [Image.effect_noise((width, height), 25) for _ in range(3)])
    return Image.blend(img, grain, 0.22)


def photo(width: int, height: int, fmt: str = "JPEG", seed: int = 0, **save: Any) -> bytes:
    """``photo_image`` encoded (JPEG quality 90 unless told otherwise)."""
    buf = io.BytesIO()
    options = {"quality": 90, **save} if fmt == "JPEG" else save
    photo_image(width, height, seed).save(buf, fmt, **options)
    return buf.getvalue()


def jpeg_of_size(target_bytes: int, seed: int = 0) -> bytes:
    """A photo JPEG of about ``target_bytes`` (by picking its dimensions)."""
    side = 400
    data = photo(side * 4 // 3, side, seed=seed)
    while len(data) < target_bytes * 0.9:
        side = int(side * (target_bytes / len(data)) ** 0.5 * 1.02) + 8
        data = photo(side * 4 // 3, side, seed=seed)
    return data


# -- statistics --------------------------------------------------------------------------------

def percentile(values: list[float], p: float) -> float:
    """The p-th percentile (0-100) by linear interpolation; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each numeric figure's median over several runs (the machine is noisy), and the runs."""
    keys = [k for k, v in runs[0].items() if isinstance(v, int | float)]
    return {**{k: median([float(r[k]) for r in runs]) for k in keys}, "runs": runs}


# -- results -----------------------------------------------------------------------------------

@dataclass
class Result:
    """One suite's figures, written to ``bench/results/<suite>.json``."""

    suite: str
    figures: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def save(self, *, quick: bool = False, seconds: float | None = None) -> Path:
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = RESULTS / f"{self.suite}.json"
        path.write_text(json.dumps({
            "suite": self.suite,
            "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "quick": quick,
            "seconds": seconds,
            "commit": _commit(),
            "machine": machine(),
            "figures": self.figures,
            "notes": self.notes,
        }, indent=2) + "\n")
        return path


def machine() -> dict[str, Any]:
    from PIL import __version__ as pillow_version
    from PIL import features

    return {"cpus": len(os.sched_getaffinity(0)), "python": platform.python_version(),
            "platform": platform.platform(terse=True), "pillow": pillow_version,
            "libjpeg_turbo": features.version("libjpeg_turbo"),
            "libwebp": features.version("webp")}


def _commit() -> str | None:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                          capture_output=True, text=True)
    return done.stdout.strip() or None if done.returncode == 0 else None


# -- a running Darkroom ------------------------------------------------------------------------

@dataclass
class BenchStack:
    url: str
    env: dict[str, str]
    processes: list[subprocess.Popen[bytes]]

    @property
    def web_pid(self) -> int:
        return self.processes[0].pid


def _wait_healthy(url: str, web: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if web.poll() is not None:
            raise RuntimeError("the web process exited while starting")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError("the web process did not become healthy")


def _wait_workers(url: str, count: int, timeout: float = 60) -> None:
    """Until ``count`` worker processes beat (they take a few seconds to boot)."""
    headers = {"Authorization": "Bearer bench-admin"}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError, KeyError, ValueError):
            report = httpx.get(f"{url}/api/queues", headers=headers, timeout=5).json()
            if int(report["workers"]) >= count:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{count} workers did not start")


@contextlib.contextmanager
def running(worker_processes: int | None = None, worker_threads: int | None = None, *,
            workers: bool = True, **extra: str) -> Iterator[BenchStack]:
    """A private Redis, SQLite, one web process and (supervised) workers, as `make run` has
    (the same defaults: one worker process per CPU, WORKER_THREADS threads each)."""
    with tempfile.TemporaryDirectory(prefix="darkroom-bench-") as name:
        tmp = Path(name)
        redis = EmbeddedRedis(tmp / "redis", persistent=False).start()
        port = free_port()
        # The settings `make run` has by default, but for a fresh Redis, database and data
        # dir of the bench's own, an admin token to watch the workers, and per-user rates
        # one bench user does not reach (uploads: still checked, as always, in Redis). The
        # suites' many sessions and sockets come from 127.0.0.1, which the per-address
        # limits leave out by default (RATE_LIMIT_EXEMPT_ADDRESSES).
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
        env.update({"REDIS_URL": redis.url, "DATA_DIR": str(tmp / "data"), "PORT": str(port),
                    "ADMIN_TOKEN": "bench-admin", "RATE_LIMIT_UPLOADS_PER_MIN": "1000000",
                    "RATE_LIMIT_TASKS_PER_MIN": "0",
                    **extra})
        for name, value in (("WORKER_PROCESSES", worker_processes),
                            ("WORKER_THREADS", worker_threads)):
            env.pop(name, None)
            if value is not None:
                env[name] = str(value)
        settings = Settings.from_env(env)
        url = f"http://127.0.0.1:{port}"
        procs: list[subprocess.Popen[bytes]] = []
        log = (tmp / "bench.log").open("wb")
        try:
            # Each in a session of its own, as honcho starts `make run`'s processes: with
            # autogroup scheduling a session shares busy CPUs as one, so in the driver's
            # session the web would share its CPU with the driver's upload loop.
            procs.append(subprocess.Popen([sys.executable, "-m", "server"], cwd=ROOT, env=env,
                                          stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True,
                                          preexec_fn=die_with_parent))
            _wait_healthy(url, procs[0])
            if workers:
                procs.append(subprocess.Popen([sys.executable, "-m", "workers"], cwd=ROOT,
                                              env=env, stdout=log, stderr=subprocess.STDOUT,
                                              start_new_session=True,
                                              preexec_fn=die_with_parent))
                _wait_workers(url, settings.worker_processes)
            # To watch the run: the dashboard's charts move with it (the minute so far).
            print(f"  (dashboard: {url}/admin, admin token {env['ADMIN_TOKEN']})", flush=True)
            yield BenchStack(url, env, procs)
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


class Receipts:
    """When each job's final event arrived (by some clock), and the event; ``wait`` for one."""

    def __init__(self) -> None:
        self.final_at: dict[str, float] = {}
        self.final: dict[str, dict[str, Any]] = {}
        self._waiters: dict[str, asyncio.Future[float]] = {}
        self._failed: BaseException | None = None

    def note(self, job_id: str, at: float, data: dict[str, Any]) -> bool:
        """Job ``job_id``'s final event ``data``, received at ``at``; False for a later one
        (the first one counts)."""
        if job_id in self.final_at:
            return False
        self.final_at[job_id] = at
        self.final[job_id] = data
        waiter = self._waiters.pop(job_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(at)
        return True

    def fail(self, exc: BaseException) -> None:
        """No more events will come: every wait, now and later, raises ``exc``."""
        self._failed = exc
        waiters, self._waiters = self._waiters, {}
        for waiter in waiters.values():
            if not waiter.done():
                waiter.set_exception(exc)

    async def wait(self, job_id: str, timeout: float = 300) -> float:
        """When (by the receiving clock) the job's final event arrived."""
        if job_id in self.final_at:
            return self.final_at[job_id]
        if self._failed is not None:
            raise self._failed
        waiter = self._waiters.setdefault(job_id, asyncio.get_running_loop().create_future())
        return await asyncio.wait_for(asyncio.shield(waiter), timeout)


class Watcher(Receipts):
    """A Socket.IO subscriber noting when each job's final event arrives (and the event):
    ``clock``'s time (perf_counter unless told), and ``on_final`` called with each."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter,
                 on_final: Callable[[str, float, dict[str, Any]], None] | None = None) -> None:
        super().__init__()
        self.sio = socketio.AsyncClient(reconnection=False)

        async def final_event(data: Any) -> None:
            job_id, now = data["job"]["id"], clock()
            if self.note(job_id, now, data) and on_final is not None:
                on_final(job_id, now, data)

        for name in FINAL_EVENTS:
            self.sio.on(name, final_event)

    async def connect(self, url: str, token: str) -> Watcher:
        snapshot = asyncio.get_running_loop().create_future()
        self.sio.on("jobs:snapshot", lambda _data: snapshot.done() or snapshot.set_result(True))
        await self.sio.connect(url, auth={"token": token}, transports=["websocket"],
                               wait_timeout=15)
        await asyncio.wait_for(snapshot, 15)
        return self

    async def close(self) -> None:
        await self.sio.disconnect()


class WatcherProcess:
    """Several users' watchers in a process of their own (``python -m bench.watch``), so
    that each final event's receipt is timed by a client that only receives, as a user's
    browser would be, not by the event loop that also sends the uploads. Times are wall
    clock (``time.time``), comparable with the events' ``published_at``; each final event
    comes as ``{"job": {"id", "state"}, "published_at"}``. Should the process die or
    send a line it cannot read, every wait fails at once."""

    def __init__(self, proc: asyncio.subprocess.Process, count: int) -> None:
        self._proc = proc
        self.watchers = [Receipts() for _ in range(count)]
        self._reader: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, url: str, tokens: list[str], timeout: float = 60) -> WatcherProcess:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.watch", url, *tokens, cwd=ROOT,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            # Not in the driver's scheduling group (autogroup: one per session), as a
            # user's browser is not; gone with the driver (PDEATHSIG) or its stdin.
            start_new_session=True, preexec_fn=die_with_parent)
        self = cls(proc, len(tokens))
        assert proc.stdout is not None
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), timeout)
            if json.loads(line or b"{}").get("ready") is not True:
                raise RuntimeError("bench.watch did not connect its watchers")
        except BaseException:
            await self.close()
            raise
        self._reader = asyncio.create_task(self._read(proc.stdout))
        return self

    async def _read(self, stdout: asyncio.StreamReader) -> None:
        ended: BaseException = RuntimeError("bench.watch exited")
        try:
            while line := await stdout.readline():
                seen = json.loads(line)
                self.watchers[seen["watcher"]].note(seen["job"]["id"], seen["at"], seen)
        except Exception as exc:
            ended = RuntimeError(f"bench.watch sent what could not be read: {exc!r}")
        finally:
            for receipts in self.watchers:
                receipts.fail(ended)

    async def close(self) -> None:
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        try:
            await asyncio.wait_for(self._proc.wait(), 15)
        except TimeoutError:
            self._proc.kill()
            await self._proc.wait()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader


async def new_token(http: httpx.AsyncClient) -> str:
    response = await http.post("/api/session")
    response.raise_for_status()
    return str(response.json()["token"])


async def upload(http: httpx.AsyncClient, token: str, data: bytes,
                 name: str = "photo.jpg") -> dict[str, Any]:
    response = await http.post("/api/images", headers={"Authorization": f"Bearer {token}"},
                               files={"file": (name, data, "image/jpeg")})
    if response.status_code not in (200, 202):
        raise RuntimeError(f"upload refused: {response.status_code} {response.text[:200]}")
    return dict(response.json())


_BOUNDARY = "darkroom-bench-boundary"
MULTIPART_TYPE = f"multipart/form-data; boundary={_BOUNDARY}"


def multipart(data: bytes, name: str, field: str = "file") -> bytes:
    """A multipart/form-data body (``MULTIPART_TYPE``) with ``data`` as field ``field``'s
    JPEG file."""
    return (f"--{_BOUNDARY}\r\nContent-Disposition: form-data; name=\"{field}\"; "
            f"filename=\"{name}\"\r\nContent-Type: image/jpeg\r\n\r\n").encode() + data + \
        f"\r\n--{_BOUNDARY}--\r\n".encode()


def unique(data: bytes, n: int) -> bytes:
    """The same JPEG with a different trailing comment, so duplicates are not detected.

    Bytes after the JPEG end-of-image marker are ignored by decoders.
    """
    return data + f"bench-{n}".encode()
