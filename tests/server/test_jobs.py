from __future__ import annotations

import pytest

from server.core.jobs import (
    STAGE_PROGRESS,
    JobState,
    Stage,
    TransitionError,
    can_transition,
    check_transition,
    is_final,
)


@pytest.mark.parametrize(("current", "target"), [
    ("queued", "active"), ("active", "completed"), ("active", "retrying"),
    ("retrying", "active"), ("active", "failed"), ("queued", "cancelled"),
    ("retrying", "cancelled"), ("active", "cancelled"), ("failed", "queued"),
    ("active", "active"),  # a redelivered message after a worker died
])
def test_contract_transitions_are_allowed(current: str, target: str) -> None:
    assert can_transition(current, target)


@pytest.mark.parametrize(("current", "target"), [
    ("completed", "active"), ("cancelled", "active"), ("completed", "cancelled"),
    ("failed", "cancelled"), ("queued", "completed"), ("cancelled", "queued"),
])
def test_other_transitions_are_refused(current: str, target: str) -> None:
    assert not can_transition(current, target)
    with pytest.raises(TransitionError):
        check_transition(current, target)


def test_final_states() -> None:
    assert {s for s in JobState if is_final(s)} == {
        JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED}


def test_stage_progress_rises_in_stage_order() -> None:
    steps = [stage for stage in Stage if stage is not Stage.PAUSED]  # paused is no step
    values = [STAGE_PROGRESS[stage] for stage in steps]
    assert values == sorted(values)
    assert values[0] == 0 and values[-1] == 100
    assert [s.value for s in steps] == [
        "stored", "decoding", "thumbnail", "preview", "metadata", "done"]
