"""Event names and payloads as they travel on the bus and the wire (pure)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from server.jobs import JobState

SNAPSHOT = "jobs:snapshot"
BATCH_PROGRESS = "batch:progress"
QUEUE_STATS = "queues:stats"
DLQ_REMOVED = "dlq:removed"
PROGRESS = "job:progress"
# Internal: a token was revoked; every web process disconnects the sockets that used it.
TOKEN_REVOKED = "session:revoked"

_STATE_EVENTS = {state: f"job:{state.value}" for state in JobState}
JOB_EVENTS = frozenset({*_STATE_EVENTS.values(), PROGRESS})


def event_for_state(state: JobState | str) -> str:
    """The Socket.IO event name announcing that a job entered ``state``."""
    return _STATE_EVENTS[JobState(state)]


@dataclass(frozen=True)
class JobEvent:
    """One job transition or progress step, addressed to the job's owner."""

    name: str
    user_id: str
    job: dict[str, Any]

    @property
    def seq(self) -> int:
        return int(self.job["seq"])

    def payload(self) -> dict[str, Any]:
        """What a Socket.IO client receives: ``{"job": <Job>, "seq": n}``."""
        return {"job": self.job, "seq": self.seq}

    def encode(self) -> str:
        """Serialise for the Redis bus."""
        return json.dumps({"name": self.name, "user_id": self.user_id, "job": self.job})

    @classmethod
    def decode(cls, raw: str | bytes) -> JobEvent:
        """Parse a bus message; raises ValueError on anything malformed."""
        try:
            data = json.loads(raw)
            name, user_id, job = data["name"], data["user_id"], data["job"]
        except (KeyError, TypeError, json.JSONDecodeError) as exc:
            raise ValueError(f"malformed event: {exc}") from None
        if name not in JOB_EVENTS or not isinstance(job, dict) or "seq" not in job:
            raise ValueError(f"malformed event {name!r}")
        return cls(name=name, user_id=str(user_id), job=job)


@dataclass(frozen=True)
class BatchEvent:
    """Where a batch upload stands, after one of its jobs moved or ended."""

    user_id: str
    batch: dict[str, Any]
    name: str = BATCH_PROGRESS

    def payload(self) -> dict[str, Any]:
        """``{"batch": {"id", "total", "done", "failed", "progress"}}``."""
        return {"batch": self.batch}

    def encode(self) -> str:
        return json.dumps({"name": self.name, "user_id": self.user_id, "batch": self.batch})


@dataclass(frozen=True)
class AdminEvent:
    """News for every admin watching the dashboard (e.g. dead letters removed)."""

    name: str
    data: dict[str, Any]

    def payload(self) -> dict[str, Any]:
        return self.data

    def encode(self) -> str:
        return json.dumps({"name": self.name, "admin": self.data})


@dataclass(frozen=True)
class TokenRevoked:
    """A bearer token was revoked: the sockets it opened must close, in every web process."""

    token_id: str
    name: str = TOKEN_REVOKED

    def payload(self) -> dict[str, Any]:
        return {"reason": "the token was revoked"}

    def encode(self) -> str:
        return json.dumps({"name": self.name, "token_id": self.token_id})


BusEvent = JobEvent | BatchEvent | AdminEvent | TokenRevoked


def decode_event(raw: str | bytes) -> BusEvent:
    """Parse a bus message of either kind; raises ValueError on anything malformed."""
    try:
        data = json.loads(raw)
        name = data["name"]
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise ValueError(f"malformed event: {exc}") from None
    if name == DLQ_REMOVED:
        if not isinstance(data.get("admin"), dict):
            raise ValueError("malformed admin event")
        return AdminEvent(name=name, data=data["admin"])
    if name == TOKEN_REVOKED:
        if not isinstance(data.get("token_id"), str):
            raise ValueError("malformed revocation event")
        return TokenRevoked(token_id=data["token_id"])
    if name == BATCH_PROGRESS:
        if not isinstance(data.get("batch"), dict) or "user_id" not in data:
            raise ValueError("malformed batch event")
        return BatchEvent(user_id=str(data["user_id"]), batch=data["batch"])
    return JobEvent.decode(raw)


USER_ROOM_PREFIX = "user:"


def user_room(user_id: str) -> str:
    """The Socket.IO room every socket of one user joins."""
    return f"{USER_ROOM_PREFIX}{user_id}"


def token_room(token_id: str) -> str:
    """The room every socket opened with one token joins (closed when it is revoked)."""
    return f"token:{token_id}"


ADMINS_ROOM = "admins"
"""Admin sockets that asked for every job's events (``subscribe {"scope": "all"}``)."""


JOB_ROOM_PREFIX = "job:"


def job_room(job_id: str) -> str:
    """The room an admin joins to follow another user's job."""
    return f"{JOB_ROOM_PREFIX}{job_id}"


def snapshot_payload(jobs: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``jobs:snapshot`` payload sent first on every (re)connect."""
    return {"jobs": jobs}
