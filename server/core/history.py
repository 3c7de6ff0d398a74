"""A job's attempts, rebuilt from its stored timeline: who ran each, its stages and how long
each took (as the worker timed them, stored with the attempt's end; else from the reported
stages), how it ended (error and traceback), and the wait before the next one.

Pure: it reads the timeline's records (anything with the ``Change`` attributes) and
returns plain values, so it is tested without a database.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from server.core.jobs import JobState

# The states that end an attempt, as the timeline records them.
_ENDS = frozenset({JobState.COMPLETED.value, JobState.RETRYING.value, JobState.FAILED.value,
                   JobState.CANCELLED.value})
# An attempt that ended without a record of its end: its worker died (or was killed) and
# the next delivery began another.
LOST = "lost"


class Change(Protocol):
    """One stored change of a job (``models.JobEventRecord`` fits)."""

    @property
    def name(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def stage(self) -> str: ...
    @property
    def at(self) -> datetime: ...
    @property
    def error(self) -> dict[str, Any] | None: ...
    @property
    def worker(self) -> str | None: ...
    @property
    def traceback(self) -> str | None: ...
    @property
    def stages(self) -> list[Any] | None: ...


@dataclass(frozen=True)
class StageTime:
    """A stage as reported: when it began and how long it took (None while it runs)."""

    stage: str
    started_at: datetime
    seconds: float | None


@dataclass
class Attempt:
    """One run of the job, from its ``job:active`` to the change that ended it."""

    number: int  # 1 for the first run in the job's life, counting every delivery
    worker: str | None
    started_at: datetime
    ended_at: datetime | None = None
    outcome: str | None = None  # the state it ended in, LOST, or None while it runs
    stages: list[StageTime] = field(default_factory=list)
    error: dict[str, Any] | None = None
    traceback: str | None = None
    backoff_s: float | None = None  # from its end to the next attempt's start

    @property
    def seconds(self) -> float | None:
        return None if self.ended_at is None else _seconds(self.started_at, self.ended_at)


def attempts(changes: Iterable[Change]) -> list[Attempt]:
    """The job's attempts, oldest first, from its timeline in seq order."""
    found: list[Attempt] = []
    marks: list[tuple[str, datetime]] = []  # the running attempt's stage starts
    running: Attempt | None = None

    def close(at: datetime, outcome: str, change: Change | None = None) -> None:
        assert running is not None
        running.ended_at, running.outcome = at, outcome
        if change is not None:
            running.error, running.traceback = change.error, change.traceback
        timed = _timed(change.stages, marks) if change is not None else None
        running.stages = timed if timed is not None else _stages(marks, at)

    for change in changes:
        if change.state == JobState.ACTIVE.value and change.name == "job:active":
            if running is not None:
                close(change.at, LOST)
            if found and found[-1].ended_at is not None:
                found[-1].backoff_s = _seconds(found[-1].ended_at, change.at)
            running = Attempt(number=len(found) + 1, worker=change.worker,
                              started_at=change.at)
            found.append(running)
            marks = [(change.stage, change.at)]
        elif running is not None and change.state == JobState.ACTIVE.value:
            if change.stage != marks[-1][0]:
                marks.append((change.stage, change.at))
        elif running is not None and change.state in _ENDS:
            close(change.at, change.state, change)
            running, marks = None, []
    if running is not None:
        running.stages = _stages(marks, None)
    return found


def _timed(told: list[Any] | None, marks: list[tuple[str, datetime]]
           ) -> list[StageTime] | None:
    """The stages as the worker timed them (every one, however short), laid end to end
    from the first reported stage's start; None when the end carries no timing."""
    if not told:
        return None
    try:
        pairs = [(str(stage), max(0.0, float(seconds))) for stage, seconds in told]
    except (TypeError, ValueError):
        return None
    # Before the first timed stage the attempt was setting up: what the events call the
    # stage the job:active named (``stored`` for images), until the first report.
    began = _aware(marks[0][1])
    reported = [_aware(at) for stage, at in marks[1:] if stage == pairs[0][0]]
    start = reported[0] if reported else began
    found = [StageTime(marks[0][0], began, _seconds(began, start))] if start > began else []
    for stage, seconds in pairs:
        found.append(StageTime(stage, start, round(seconds, 3)))
        start = start + timedelta(seconds=seconds)
    return found


def _stages(marks: list[tuple[str, datetime]], end: datetime | None) -> list[StageTime]:
    ends = [at for _, at in marks[1:]] + [end]
    return [StageTime(stage, at, None if until is None else _seconds(at, until))
            for (stage, at), until in zip(marks, ends, strict=True)]


def _seconds(start: datetime, end: datetime) -> float:
    return max(0.0, round((_aware(end) - _aware(start)).total_seconds(), 3))


def _aware(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; they are UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)
