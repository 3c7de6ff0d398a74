from __future__ import annotations

import pytest

from server.core.events import (
    JOB_EVENTS,
    AdminEvent,
    BatchEvent,
    JobEvent,
    decode_event,
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


def test_publish_time_travels_on_the_bus_and_reaches_the_client() -> None:
    event = JobEvent(name="job:active", user_id="u1", job={"id": "j1", "seq": 2})
    decoded = decode_event(event.encode(published_at=1700000000.25))
    assert isinstance(decoded, JobEvent) and decoded.published_at == 1700000000.25
    assert decoded.payload() == {"job": {"id": "j1", "seq": 2}, "seq": 2,
                                 "published_at": 1700000000.25}
    batch = decode_event(BatchEvent(user_id="u1", batch={"id": "b"}).encode(published_at=5.0))
    assert batch.payload() == {"batch": {"id": "b"}, "published_at": 5.0}
    admin = decode_event(AdminEvent("dlq:removed", {"all": True}).encode(published_at=6))
    assert admin.payload() == {"all": True, "published_at": 6.0}


@pytest.mark.parametrize("stamp", ['"soon"', "true", "NaN", "null"])
def test_a_bad_or_missing_publish_time_is_left_out(stamp: str) -> None:
    raw = '{"name": "job:queued", "user_id": "u", "job": {"id": "j", "seq": 1}, ' \
          f'"published_at": {stamp}}}'
    decoded = decode_event(raw)
    assert decoded.published_at is None
    assert "published_at" not in decoded.payload()
