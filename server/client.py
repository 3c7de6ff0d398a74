"""A client of a running Darkroom, as any REST caller or Socket.IO subscriber would be.

Used by the ``darkroom dlq`` and ``darkroom watch`` commands: they go through the public
API (and so through its authorisation and audit log), never around it.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

FINAL_EVENTS = ("job:completed", "job:failed", "job:cancelled")
_JOB_EVENTS = ("job:queued", "job:active", "job:progress", "job:retrying", *FINAL_EVENTS)
_HTTP_TIMEOUT_S = 30


class ClientError(RuntimeError):
    """The server refused or could not be reached; the message says why."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Client:
    """REST calls with a bearer token against ``url``."""

    url: str
    token: str

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """One JSON call; returns the decoded body (None for 204), raises ClientError."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url.rstrip("/") + path, data=data, method=method,
            headers={"Authorization": f"Bearer {self.token}", "Accept": "application/json",
                     **({"Content-Type": "application/json"} if data is not None else {})})
        try:
            with urllib.request.urlopen(request, timeout=_HTTP_TIMEOUT_S) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raise ClientError(_error_text(exc.read(), exc.code), exc.code) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ClientError(f"cannot reach {self.url}: {reason}") from None
        return json.loads(raw) if raw else None


def _error_text(raw: bytes, status: int) -> str:
    try:
        error = json.loads(raw)["error"]
        return f"{status} {error['code']}: {error['message']}"
    except (ValueError, KeyError, TypeError):
        return f"HTTP {status}"


@dataclass
class JobWatch:
    """What a subscriber knows of one job: the newest state by ``seq`` (older ones dropped)."""

    job_id: str
    seq: int = 0
    job: dict[str, Any] | None = None
    final: str | None = None
    seen: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def apply(self, name: str, job: dict[str, Any], seq: int) -> bool:
        """Take an event if it is about this job and newer; True if it was taken."""
        if job.get("id") != self.job_id or seq <= self.seq:
            return False
        self.seq, self.job = seq, job
        self.seen.append((name, job))
        if job.get("state") in ("completed", "failed", "cancelled"):
            self.final = f"job:{job['state']}"
        return True


async def watch_job(url: str, token: str, job_id: str,
                    on_event: Callable[[str, dict[str, Any]], None],
                    timeout: float | None = None) -> JobWatch:
    """Follow one job over Socket.IO until it ends; ``on_event`` sees each newer state.

    The same steps a third-party subscriber takes: connect with ``auth: {token}``,
    ``subscribe {job_id}`` for the current snapshot, then the job's events, dropping any
    whose ``seq`` is not newer. Reconnects by itself; ``jobs:snapshot`` fills any gap.
    """
    import socketio  # only here: the other commands need no Socket.IO client

    watch = JobWatch(job_id)
    done = asyncio.Event()
    refused: list[str] = []
    sio = socketio.AsyncClient(reconnection=True, reconnection_delay=0.5,
                               reconnection_delay_max=5)

    def take(name: str, job: Any, seq: Any) -> None:
        if isinstance(job, dict) and isinstance(seq, int) and watch.apply(name, job, seq):
            on_event(name, job)
            if watch.final:
                done.set()

    def on_job_event(name: str) -> Callable[[Any], Awaitable[None]]:
        async def handler(data: Any) -> None:
            if isinstance(data, dict):
                take(name, data.get("job"), data.get("seq"))
        return handler

    async def on_snapshot(data: Any) -> None:
        for job in (data or {}).get("jobs", []) if isinstance(data, dict) else []:
            if isinstance(job, dict):
                take("jobs:snapshot", job, job.get("seq"))

    async def on_connect() -> None:
        ack = await sio.call("subscribe", {"job_id": job_id}, timeout=30)
        if not isinstance(ack, dict) or not ack.get("ok"):
            error = (ack or {}).get("error", {}) if isinstance(ack, dict) else {}
            refused.append(f"{error.get('code', 'error')}: {error.get('message', ack)}")
            done.set()
            return
        take("subscribe", ack["job"], ack["job"].get("seq"))

    async def on_connect_error(data: Any) -> None:
        message = data.get("message") if isinstance(data, dict) else data
        refused.append(str(message))
        done.set()

    async def on_revoked(_data: Any) -> None:
        refused.append("the token was revoked")
        done.set()

    for name in _JOB_EVENTS:
        sio.on(name, on_job_event(name))
    sio.on("jobs:snapshot", on_snapshot)
    # Not awaited in the handler: the ack it waits for is read by the task running it.
    sio.on("connect", lambda: sio.start_background_task(on_connect))
    sio.on("connect_error", on_connect_error)
    sio.on("session:revoked", on_revoked)
    try:
        await sio.connect(url, auth={"token": token}, wait_timeout=15)
    except socketio.exceptions.ConnectionError as exc:
        raise ClientError(refused[0] if refused else f"cannot connect to {url}: {exc}") from None
    try:
        await asyncio.wait_for(done.wait(), timeout)
    except TimeoutError:
        raise ClientError(f"job {job_id} did not end within {timeout:g} s") from None
    finally:
        await sio.disconnect()
    if refused and watch.final is None:
        raise ClientError(refused[0])
    return watch
