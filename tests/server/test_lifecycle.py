"""What a state change writes besides the state, and the image status (``core.lifecycle``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from server.core.jobs import AttemptsExhausted, JobState, TransitionError
from server.core.lifecycle import (
    SNAPSHOT_WINDOW,
    ImageStatus,
    cancel_error,
    cancelled_image_fields,
    image_status,
    next_attempt,
    reported_progress,
    snapshot_since,
    transition_fields,
)

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
EARLIER = NOW - timedelta(minutes=5)


def test_every_job_state_gives_the_image_status_the_contract_names() -> None:
    assert {state: image_status(state) for state in JobState} == {
        JobState.QUEUED: "queued", JobState.ACTIVE: "processing",
        JobState.RETRYING: "processing", JobState.COMPLETED: "ready",
        JobState.FAILED: "failed", JobState.CANCELLED: "failed"}
    assert image_status("retrying") is ImageStatus.PROCESSING


def test_a_move_writes_the_fields_asked_for_and_is_stamped() -> None:
    fields = transition_fields(JobState.QUEUED, JobState.ACTIVE, now=NOW, started_at=None,
                               stage="decoding", progress=10, attempt=1)
    assert fields == {"state": "active", "updated_at": NOW, "stage": "decoding",
                      "progress": 10, "attempt": 1, "started_at": NOW, "error": None,
                      "traceback": None}


def test_a_run_keeps_its_first_start_and_clears_the_last_error() -> None:
    """The attempt before keeps its error and traceback in the timeline, not on the job."""
    fields = transition_fields(JobState.RETRYING, JobState.ACTIVE, now=NOW,
                               started_at=EARLIER, attempt=2)
    assert (fields["started_at"], fields["error"], fields["traceback"]) == (EARLIER, None, None)


def test_an_error_comes_with_its_traceback_and_an_end_is_stamped() -> None:
    error = {"type": "E", "message": "m"}
    fields = transition_fields(JobState.ACTIVE, JobState.FAILED, now=NOW, started_at=EARLIER,
                               error=error, traceback=None, result={"partial": True})
    assert (fields["error"], fields["traceback"], fields["result"], fields["finished_at"]) == (
        error, None, {"partial": True}, NOW)
    retrying = transition_fields(JobState.ACTIVE, JobState.RETRYING, now=NOW,
                                 started_at=EARLIER, run_at=NOW)
    assert "finished_at" not in retrying and "error" not in retrying
    assert retrying["run_at"] == NOW


def test_back_in_the_queue_is_a_fresh_run_whatever_was_asked() -> None:
    fields = transition_fields(JobState.FAILED, JobState.QUEUED, now=NOW, started_at=EARLIER,
                               stage="preview", progress=65, attempt=3, run_at=NOW)
    assert fields == {"state": "queued", "updated_at": NOW, "stage": "stored", "progress": 0,
                      "attempt": 0, "run_at": None, "error": None, "traceback": None,
                      "result": None, "started_at": None, "finished_at": None}


def test_a_move_the_state_machine_forbids_raises() -> None:
    with pytest.raises(TransitionError):
        transition_fields(JobState.COMPLETED, JobState.ACTIVE, now=NOW, started_at=EARLIER)


def test_next_attempt_counts_every_delivery() -> None:
    assert next_attempt(state="queued", attempt=0, max_attempts=2) == 1
    assert next_attempt(state=JobState.ACTIVE, attempt=1, max_attempts=2) == 2
    with pytest.raises(AttemptsExhausted, match=r"after 2 attempts \(its worker stopped"):
        next_attempt(state="active", attempt=2, max_attempts=2)
    with pytest.raises(AttemptsExhausted) as exc:
        next_attempt(state="retrying", attempt=2, max_attempts=2)
    assert "worker" not in str(exc.value)
    with pytest.raises(TransitionError):
        next_attempt(state="cancelled", attempt=0, max_attempts=2)


def test_progress_never_goes_back_and_a_cancel_says_why() -> None:
    assert (reported_progress(40, 20), reported_progress(40, 65)) == (40, 65)
    assert cancel_error() == {"type": "Cancelled", "message": "cancelled on request"}
    assert cancel_error() is not cancel_error()  # callers may keep it
    assert cancelled_image_fields() == {"has_thumbnail": False, "has_preview": False}


def test_a_snapshot_carries_the_last_ten_minutes() -> None:
    assert SNAPSHOT_WINDOW == timedelta(minutes=10)
    assert snapshot_since(NOW) == NOW - timedelta(minutes=10)
