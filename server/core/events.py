"""Event names and payloads as they travel on the bus and the wire (pure)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from server.core.jobs import JobState

SNAPSHOT = "jobs:snapshot"
BATCH_PROGRESS = "batch:progress"
QUEUE_STATS = "queues:stats"
DLQ_REMOVED = "dlq:removed"
PROGRESS = "job:progress"
# Internal: a token was revoked; every web process disconnects the sockets that used it.
TOKEN_REVOKED = "session:revoked"

_STATE_EVENTS = {state: f"job:{state.value}" for state in JobState}
JOB_EVENTS = frozenset({*_STATE_EVENTS.values(), PROGRESS})


def _stamped(data: dict[str, Any], published_at: float | None) -> str:
    """A bus message, with the publish time when there is one."""
    if published_at is not None:
        data["published_at"] = published_at
    return json.dumps(data)


def _published_at(data: dict[str, Any]) -> float | None:
    """The publish time a bus message carries (None from publishers that predate it)."""
    value = data.get("published_at")
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not math.isfinite(value):
        return None
    return float(value)


def _with_time(payload: dict[str, Any], published_at: float | None) -> dict[str, Any]:
    return payload if published_at is None else {**payload, "published_at": published_at}


def event_for_state(state: JobState | str) -> str:
    """The Socket.IO event name announcing that a job entered ``state``."""
    return _STATE_EVENTS[JobState(state)]


@dataclass(frozen=True)
class JobEvent:
    """One job transition or progress step, addressed to the job's owner."""

    name: str
    user_id: str
    job: dict[str, Any]
    published_at: float | None = None
    """When it was published on the bus (epoch seconds), once it has been."""

    @property
    def seq(self) -> int:
        return int(self.job["seq"])

    def payload(self) -> dict[str, Any]:
        """What a Socket.IO client receives: ``{"job": <Job>, "seq": n, "published_at"}``."""
        return _with_time({"job": self.job, "seq": self.seq}, self.published_at)

    def encode(self, *, published_at: float | None = None) -> str:
        """Serialise for the Redis bus, stamped with the publish time if given."""
        return _stamped({"name": self.name, "user_id": self.user_id, "job": self.job},
                        published_at if published_at is not None else self.published_at)

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
        return cls(name=name, user_id=str(user_id), job=job, published_at=_published_at(data))


@dataclass(frozen=True)
class BatchEvent:
    """Where a batch upload stands, after one of its jobs moved or ended."""

    user_id: str
    batch: dict[str, Any]
    name: str = BATCH_PROGRESS
    published_at: float | None = None

    def payload(self) -> dict[str, Any]:
        """``{"batch": {"id", "total", "done", "failed", "progress"}, "published_at"}``."""
        return _with_time({"batch": self.batch}, self.published_at)

    def encode(self, *, published_at: float | None = None) -> str:
        return _stamped({"name": self.name, "user_id": self.user_id, "batch": self.batch},
                        published_at if published_at is not None else self.published_at)


@dataclass(frozen=True)
class AdminEvent:
    """News for every admin watching the dashboard (e.g. dead letters removed)."""

    name: str
    data: dict[str, Any]
    published_at: float | None = None

    def payload(self) -> dict[str, Any]:
        return _with_time(self.data, self.published_at)

    def encode(self, *, published_at: float | None = None) -> str:
        return _stamped({"name": self.name, "admin": self.data},
                        published_at if published_at is not None else self.published_at)


@dataclass(frozen=True)
class TokenRevoked:
    """A bearer token was revoked: the sockets it opened must close, in every web process."""

    token_id: str
    name: str = TOKEN_REVOKED
    published_at: float | None = None

    def payload(self) -> dict[str, Any]:
        return _with_time({"reason": "the token was revoked"}, self.published_at)

    def encode(self, *, published_at: float | None = None) -> str:
        return _stamped({"name": self.name, "token_id": self.token_id},
                        published_at if published_at is not None else self.published_at)


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
        return AdminEvent(name=name, data=data["admin"], published_at=_published_at(data))
    if name == TOKEN_REVOKED:
        if not isinstance(data.get("token_id"), str):
            raise ValueError("malformed revocation event")
        return TokenRevoked(token_id=data["token_id"], published_at=_published_at(data))
    if name == BATCH_PROGRESS:
        if not isinstance(data.get("batch"), dict) or "user_id" not in data:
            raise ValueError("malformed batch event")
        return BatchEvent(user_id=str(data["user_id"]), batch=data["batch"],
                          published_at=_published_at(data))
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
