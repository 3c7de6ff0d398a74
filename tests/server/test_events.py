from __future__ import annotations

import pytest

from server.core.events import (
    JOB_EVENTS,
    AdminEvent,
    BatchEvent,
    BusEvent,
    JobEvent,
    TokenRevoked,
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


@pytest.mark.parametrize("stamp", ['"soon"', "true", "NaN", "null", "1e400"])
def test_a_bad_or_missing_publish_time_is_left_out(stamp: str) -> None:
    raw = '{"name": "job:queued", "user_id": "u", "job": {"id": "j", "seq": 1}, ' \
          f'"published_at": {stamp}}}'
    decoded = decode_event(raw)
    assert decoded.published_at is None
    assert "published_at" not in decoded.payload()


def test_every_job_event_name_has_its_bus_message() -> None:
    # The bus decodes by the message's tag: a state without one would be dropped.
    for name in JOB_EVENTS:
        event = JobEvent(name=name, user_id="u", job={"id": "j", "seq": 1})
        assert decode_event(event.encode()) == event


@pytest.mark.parametrize("event", [
    BatchEvent(user_id="u1", batch={"id": "b", "total": 2, "done": 1}),
    AdminEvent("dlq:removed", {"job_ids": ["j1"]}),
    TokenRevoked(token_id="t1"),
])
def test_every_kind_round_trips_through_the_bus(event: BusEvent) -> None:
    assert decode_event(event.encode()) == event
    assert decode_event(event.encode(published_at=3.5)).published_at == 3.5


@pytest.mark.parametrize("raw", [
    b"[1]", b'{"name": "queues:stats"}', b'{"name": "batch:progress", "batch": {}}',
    b'{"name": "batch:progress", "user_id": "u", "batch": [1]}',
    b'{"name": "dlq:removed", "admin": "all"}', b'{"name": "session:revoked", "token_id": 5}',
    b'{"name": "job:active", "user_id": 5, "job": {"seq": 1}}',
])
def test_malformed_messages_of_every_kind_are_rejected(raw: bytes) -> None:
    with pytest.raises(ValueError):
        decode_event(raw)


def test_a_job_event_is_not_decoded_from_another_kind() -> None:
    with pytest.raises(ValueError):
        JobEvent.decode(TokenRevoked(token_id="t").encode())


def test_fields_a_newer_publisher_adds_are_ignored() -> None:
    raw = '{"name": "job:queued", "user_id": "u", "job": {"seq": 1}, "trace": "x"}'
    assert decode_event(raw) == JobEvent(name="job:queued", user_id="u", job={"seq": 1})


@pytest.mark.parametrize(("earlier", "later", "order"), [
    ({"done": 0, "failed": 0, "progress": 99}, {"done": 1, "failed": 0, "progress": 0}, -1),
    ({"done": 1, "failed": 0, "progress": 82}, {"done": 1, "failed": 1, "progress": 100}, -1),
    # Progress alone is no news: a job running again lowers it, and that is pushed.
    ({"done": 1, "failed": 0, "progress": 90}, {"done": 1, "failed": 0, "progress": 40}, 0),
])
def test_a_batch_summary_ranks_by_its_finished_jobs(
        earlier: dict[str, int], later: dict[str, int], order: int) -> None:
    first = BatchEvent(user_id="u", batch={"id": "B", **earlier}).rank
    second = BatchEvent(user_id="u", batch={"id": "B", **later}).rank
    assert first is not None and second is not None
    assert (first > second) - (first < second) == order


@pytest.mark.parametrize("batch", [{"id": "B", "done": 1}, {"done": 1, "failed": 0, "progress": 5},
                                   {"id": "B", "done": "x", "failed": 0, "progress": 5}])
def test_a_summary_without_its_counts_has_no_rank(batch: dict[str, object]) -> None:
    assert BatchEvent(user_id="u", batch=batch).rank is None
