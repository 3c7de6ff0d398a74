"""Event names and payloads as they travel on the bus and the wire (pure).

On the bus each event is one ``server.core.wire.bus`` message, tagged by its name.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import msgspec

from server.core.jobs import JobState
from server.core.wire import bus

SNAPSHOT = "jobs:snapshot"
BATCH_PROGRESS = "batch:progress"
QUEUE_STATS = "queues:stats"
WORKERS_STATS = "workers:stats"
CHART_POINT = "charts:point"
DLQ_REMOVED = "dlq:removed"
PROGRESS = "job:progress"
# Internal: a token was revoked; every web process disconnects the sockets that used it.
TOKEN_REVOKED = "session:revoked"

_STATE_EVENTS = {state: f"job:{state.value}" for state in JobState}
JOB_EVENTS = frozenset({*_STATE_EVENTS.values(), PROGRESS})
_JOB_MESSAGES: dict[str, type[bus.JobMessage]] = {
    str(kind.__struct_config__.tag): kind for kind in bus.JOB_MESSAGES}


def _published_at(value: Any) -> float | None:
    """A usable publish time, else None (publishers that predate it send none)."""
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not math.isfinite(value):
        return None
    return float(value)


def _with_time(payload: dict[str, Any], published_at: float | None) -> dict[str, Any]:
    return payload if published_at is None else {**payload, "published_at": published_at}


def _encode(message: bus.Message) -> str:
    return msgspec.json.encode(message).decode()


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
    trace: dict[str, str] | None = None
    """The publisher's trace context (W3C headers), when it traces."""

    @property
    def seq(self) -> int:
        return int(self.job["seq"])

    def payload(self) -> dict[str, Any]:
        """What a Socket.IO client receives: ``{"job": <Job>, "seq": n, "published_at"}``."""
        return _with_time({"job": self.job, "seq": self.seq}, self.published_at)

    def encode(self, *, published_at: float | None = None,
               trace: dict[str, str] | None = None) -> str:
        """Serialise for the Redis bus, stamped with the publish time and the publisher's
        trace context if given."""
        kind = _JOB_MESSAGES[self.name]
        return _encode(kind(user_id=self.user_id, job=self.job,
                            published_at=_stamp(published_at, self.published_at),
                            trace=trace or self.trace))

    @classmethod
    def decode(cls, raw: str | bytes) -> JobEvent:
        """Parse a bus message; raises ValueError on anything malformed."""
        event = decode_event(raw)
        if not isinstance(event, JobEvent):
            raise ValueError(f"not a job event: {event.name!r}")
        return event


@dataclass(frozen=True)
class BatchEvent:
    """Where a batch upload stands, after one of its jobs moved or ended."""

    user_id: str
    batch: dict[str, Any]
    name: str = BATCH_PROGRESS
    published_at: float | None = None
    trace: dict[str, str] | None = None

    def payload(self) -> dict[str, Any]:
        """``{"batch": {"id", "total", "done", "failed", "progress"}, "published_at"}``."""
        return _with_time({"batch": self.batch}, self.published_at)

    @property
    def rank(self) -> int | None:
        """How many of the batch's jobs have finished. A summary that counts fewer than one
        already published is older news (two jobs of a batch that end at once may each
        read the batch before the other's end, then publish in the opposite order); one
        counting as many is published (a job running again lowers the progress, not the
        count; a failed job run again lowers the count, and its retry starts the batch's
        count afresh). None when the summary lacks the counts."""
        batch = self.batch
        try:
            if not batch["id"]:
                return None
            return int(batch["done"]) + int(batch["failed"])
        except (KeyError, TypeError, ValueError):
            return None

    def encode(self, *, published_at: float | None = None,
               trace: dict[str, str] | None = None) -> str:
        return _encode(bus.BatchProgress(user_id=self.user_id, batch=self.batch,
                                         published_at=_stamp(published_at, self.published_at),
                                         trace=trace or self.trace))


@dataclass(frozen=True)
class AdminEvent:
    """News for every admin watching the dashboard (e.g. dead letters removed)."""

    name: str
    data: dict[str, Any]
    published_at: float | None = None
    trace: dict[str, str] | None = None

    def payload(self) -> dict[str, Any]:
        return _with_time(self.data, self.published_at)

    def encode(self, *, published_at: float | None = None,
               trace: dict[str, str] | None = None) -> str:
        if self.name != DLQ_REMOVED:  # the only admin event there is
            raise ValueError(f"no admin event named {self.name!r}")
        return _encode(bus.DeadLettersRemoved(
            admin=self.data, published_at=_stamp(published_at, self.published_at),
            trace=trace or self.trace))


@dataclass(frozen=True)
class TokenRevoked:
    """A bearer token was revoked: the sockets it opened must close, in every web process."""

    token_id: str
    name: str = TOKEN_REVOKED
    published_at: float | None = None
    trace: dict[str, str] | None = None

    def payload(self) -> dict[str, Any]:
        return _with_time({"reason": "the token was revoked"}, self.published_at)

    def encode(self, *, published_at: float | None = None,
               trace: dict[str, str] | None = None) -> str:
        return _encode(bus.SessionRevoked(token_id=self.token_id,
                                          published_at=_stamp(published_at, self.published_at),
                                          trace=trace or self.trace))


BusEvent = JobEvent | BatchEvent | AdminEvent | TokenRevoked


def _stamp(given: float | None, carried: float | None) -> float | None:
    return given if given is not None else carried


_DECODER = msgspec.json.Decoder(bus.BusMessage)


def decode_event(raw: str | bytes) -> BusEvent:
    """Parse a bus message of any kind; raises ValueError on anything malformed.

    A well-formed message is decoded straight into its kind. Anything else is parsed by
    ``json`` first: a bad publish time (even NaN, which strict JSON parsers refuse) only
    leaves the time out; the message is then checked against its kind.
    """
    try:
        message = _DECODER.decode(raw)
    except (msgspec.DecodeError, TypeError):
        return _decode_leniently(raw)
    if message.published_at is not None and _published_at(message.published_at) is None:
        message = msgspec.structs.replace(message, published_at=None)
    return _event(message)


def _decode_leniently(raw: str | bytes) -> BusEvent:
    try:
        data = json.loads(raw)
    except (TypeError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"malformed event: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError("malformed event: not an object")
    data["published_at"] = _published_at(data.get("published_at"))
    data["trace"] = _trace(data.get("trace"))
    try:
        message = msgspec.convert(data, bus.BusMessage)
    except msgspec.ValidationError as exc:
        raise ValueError(f"malformed event {data.get('name')!r}: {exc}") from None
    return _event(message)


def _trace(value: Any) -> dict[str, str] | None:
    """A usable trace context (string headers), else None: a bad one only loses the trace."""
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        return None
    return value or None


def _event(message: bus.BusMessage) -> BusEvent:
    at, trace = message.published_at, message.trace or None
    if isinstance(message, bus.JobMessage):
        if "seq" not in message.job:
            raise ValueError("malformed job event: no seq")
        name = str(type(message).__struct_config__.tag)
        return JobEvent(name=name, user_id=message.user_id, job=message.job, published_at=at,
                        trace=trace)
    if isinstance(message, bus.BatchProgress):
        return BatchEvent(user_id=message.user_id, batch=message.batch, published_at=at,
                          trace=trace)
    if isinstance(message, bus.DeadLettersRemoved):
        return AdminEvent(name=DLQ_REMOVED, data=message.admin, published_at=at, trace=trace)
    return TokenRevoked(token_id=message.token_id, published_at=at, trace=trace)


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
