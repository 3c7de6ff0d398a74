from __future__ import annotations

import pytest

from server.events import (
    JOB_EVENTS,
    JobEvent,
    event_for_state,
    job_room,
    snapshot_payload,
    user_room,
)


def test_every_state_has_its_contract_event_name() -> None:
    assert JOB_EVENTS == {"job:queued", "job:active", "job:progress", "job:retrying",
                          "job:completed", "job:failed", "job:cancelled"}
    assert event_for_state("completed") == "job:completed"


def test_event_round_trips_through_the_bus_encoding() -> None:
    event = JobEvent(name="job:progress", user_id="u1", job={"id": "j1", "seq": 7})
    decoded = JobEvent.decode(event.encode())
    assert decoded == event
    assert decoded.payload() == {"job": {"id": "j1", "seq": 7}, "seq": 7}


@pytest.mark.parametrize("raw", [
    b"not json", b"{}", b'{"name": "job:nope", "user_id": "u", "job": {"seq": 1}}',
    b'{"name": "job:queued", "user_id": "u", "job": {"id": "x"}}',
    b'{"name": "job:queued", "user_id": "u", "job": [1]}',
])
def test_malformed_bus_messages_are_rejected(raw: bytes) -> None:
    with pytest.raises(ValueError):
        JobEvent.decode(raw)


def test_rooms_and_snapshot_shape() -> None:
    assert user_room("abc") == "user:abc"
    assert job_room("j") == "job:j"
    assert snapshot_payload([]) == {"jobs": []}
