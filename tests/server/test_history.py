"""A job's attempts rebuilt from its timeline (``server.core.history``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from server.core.history import LOST, StageTime, attempts

T0 = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)


@dataclass(frozen=True)
class _Change:
    name: str
    state: str
    stage: str
    at: datetime
    error: dict[str, Any] | None = None
    worker: str | None = None
    traceback: str | None = None
    stages: list[Any] | None = None


def _at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_a_retried_job_has_two_attempts_with_stages_errors_and_the_wait_between() -> None:
    boom = {"type": "TransientError", "message": "run 1"}
    found = attempts([
        _Change("job:queued", "queued", "stored", _at(0)),
        _Change("job:active", "active", "stored", _at(1), worker="h:1:w-0"),
        _Change("job:progress", "active", "decoding", _at(1.5)),
        _Change("job:retrying", "retrying", "retrying", _at(2), error=boom, traceback="tb 1"),
        _Change("job:active", "active", "stored", _at(6), worker="h:2:w-1"),
        _Change("job:progress", "active", "decoding", _at(6.25)),
        _Change("job:progress", "active", "thumbnail", _at(7)),
        _Change("job:progress", "active", "thumbnail", _at(7.5)),  # same stage, more progress
        _Change("job:completed", "completed", "done", _at(8)),
    ])
    first, second = found
    assert (first.number, first.worker, first.outcome, first.error, first.traceback) == (
        1, "h:1:w-0", "retrying", boom, "tb 1")
    assert (first.started_at, first.ended_at, first.seconds, first.backoff_s) == (
        _at(1), _at(2), 1.0, 4.0)
    assert first.stages == [StageTime("stored", _at(1), 0.5), StageTime("decoding", _at(1.5), 0.5)]
    assert (second.number, second.worker, second.outcome, second.seconds, second.backoff_s) == (
        2, "h:2:w-1", "completed", 2.0, None)
    assert [(s.stage, s.seconds) for s in second.stages] == [
        ("stored", 0.25), ("decoding", 0.75), ("thumbnail", 1.0)]
    assert second.error is None and second.traceback is None


def test_an_attempt_whose_worker_died_is_lost_and_a_running_one_is_open() -> None:
    found = attempts([
        _Change("job:active", "active", "stored", _at(0), worker="a"),
        _Change("job:progress", "active", "decoding", _at(1)),
        _Change("job:active", "active", "stored", _at(30), worker="b"),  # redelivered
        _Change("job:progress", "active", "preview", _at(31)),
    ])
    lost, running = found
    assert (lost.outcome, lost.ended_at, lost.backoff_s) == (LOST, _at(30), 0.0)
    assert lost.stages[-1] == StageTime("decoding", _at(1), 29.0)
    assert (running.outcome, running.ended_at, running.seconds) == (None, None, None)
    assert running.stages == [StageTime("stored", _at(30), 1.0),
                              StageTime("preview", _at(31), None)]


def test_a_dead_letter_retry_runs_on_counting_and_queue_refreshes_change_nothing() -> None:
    failed = {"type": "ImageError", "message": "broken"}
    found = attempts([
        _Change("job:queued", "queued", "stored", _at(0)),
        _Change("job:queued", "queued", "stored", _at(0.5)),  # a position refresh
        _Change("job:active", "active", "stored", _at(1)),
        _Change("job:failed", "failed", "failed", _at(2), error=failed, traceback="tb"),
        _Change("job:queued", "queued", "stored", _at(100)),  # an admin's retry
        _Change("job:active", "active", "stored", _at(101)),
        _Change("job:cancelled", "cancelled", "cancelled", _at(102)),
    ])
    assert [(a.number, a.outcome, a.backoff_s) for a in found] == [
        (1, "failed", 99.0), (2, "cancelled", None)]
    assert found[0].traceback == "tb" and found[1].error is None


def test_naive_times_from_sqlite_are_utc_and_no_timeline_is_no_attempt() -> None:
    naive = T0.replace(tzinfo=None)
    found = attempts([_Change("job:active", "active", "stored", naive),
                      _Change("job:completed", "completed", "done", _at(3))])
    assert found[0].seconds == 3.0
    assert attempts([]) == []


def test_the_stages_the_worker_timed_win_over_the_reported_ones() -> None:
    """Stages shorter than PROGRESS_INTERVAL_MS are folded into the next report; the
    attempt's end carries every stage as timed, laid end to end from the first report."""
    found = attempts([
        _Change("job:active", "active", "stored", _at(0), worker="w"),
        _Change("job:progress", "active", "decoding", _at(0.5)),
        _Change("job:completed", "completed", "done", _at(2),
                stages=[["decoding", 0.25], ["thumbnail", 0.05], ["preview", 0.5],
                        ["metadata", 0.01]]),
    ])
    assert [(s.stage, s.started_at, s.seconds) for s in found[0].stages] == [
        ("stored", _at(0), 0.5), ("decoding", _at(0.5), 0.25),
        ("thumbnail", _at(0.75), 0.05), ("preview", _at(0.8), 0.5),
        ("metadata", _at(1.3), 0.01)]
    # An end without timings (older rows, a lost run) keeps the reported stages.
    bare = attempts([_Change("job:active", "active", "stored", _at(0)),
                     _Change("job:completed", "completed", "done", _at(1), stages=[])])
    assert [(s.stage, s.seconds) for s in bare[0].stages] == [("stored", 1.0)]
