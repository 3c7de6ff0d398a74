"""The search filters of GET /api/jobs and GET /api/dlq (``server.core.search``)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from server.core.errors import ApiError, Problem
from server.core.search import (
    EVERYTHING,
    MAX_TEXT_CHARS,
    JobSearch,
    job_search,
    short_id,
    time_id,
)
from server.data.models import new_id


def test_every_filter_is_read_and_tidied() -> None:
    found = job_search({
        "id": " 01A2B3 ", "type": "image.process", "state": "failed", "queue": "images",
        "user": "u1", "filename": " IMG_1.jpg ", "sha256": "ABCDEF12", "error": "Timeout",
        "from": "2026-12-06T09:00:00Z", "to": "2026-12-06T11:00:00+01:00",
    })
    assert found == JobSearch(
        id="01a2b3", type="image.process", state="failed", queue="images", user="u1",
        filename="IMG_1.jpg", sha256="abcdef12", error="Timeout",
        created_from=datetime(2026, 12, 6, 9, tzinfo=UTC),
        created_to=datetime.fromisoformat("2026-12-06T11:00:00+01:00"))
    assert found.described().startswith("id=01a2b3, type=image.process, state=failed")


def test_no_filter_is_everything() -> None:
    assert job_search({}) == EVERYTHING
    assert job_search({"type": " ", "error": ""}).empty
    assert EVERYTHING.described() == "*"
    assert not JobSearch(type="x").empty


@pytest.mark.parametrize(("query", "says"), [
    ({"id": "xyz"}, "id must be 1 to 32 hexadecimal digits"),
    ({"id": "a" * 33}, "id is over 32 characters"),
    ({"sha256": "abc"}, "sha256 must be 6 to 64 hexadecimal digits"),
    ({"type": "a b"}, "type must be printable characters without spaces"),
    ({"user": "u" * 65}, "user is over 64 characters"),
    ({"error": "e" * (MAX_TEXT_CHARS + 1)}, f"error is over {MAX_TEXT_CHARS} characters"),
    ({"from": "yesterday"}, "from must be an ISO-8601 time"),
    ({"filename": "a\nb"}, "filename must not contain control characters"),
    ({"error": "x\x1b[31m"}, "error must not contain control characters"),
    ({"to": "2026-12-06T10:00:00"}, "to needs a timezone"),
    ({"from": "2026-12-06T10:00:00Z", "to": "2026-12-06T09:00:00Z"},
     "from must be before to"),
])
def test_a_malformed_filter_is_a_400_that_says_why(query: dict[str, str], says: str) -> None:
    with pytest.raises(ApiError) as refused:
        job_search(query)
    assert refused.value.kind is Problem.INVALID and refused.value.code == "invalid_filter"
    assert says in refused.value.message


def test_an_unknown_state_is_refused() -> None:
    with pytest.raises(ApiError) as refused:
        job_search({"state": "nope"})
    assert refused.value.kind is Problem.INVALID and "unknown state" in refused.value.message
    assert job_search({"state": "delayed"}).state == "delayed"


def test_a_time_is_the_smallest_id_made_then() -> None:
    """Ids made at or after a time sort at or after its id bound; earlier ones before."""
    made = new_id()
    when = datetime.fromtimestamp(int(made[:12], 16) / 1000, UTC)
    assert time_id(when) <= made < time_id(datetime.fromtimestamp(
        (int(made[:12], 16) + 1) / 1000, UTC))
    assert time_id(datetime(1960, 1, 1, tzinfo=UTC)) == "0" * 12
    assert JobSearch(created_from=when).id_range() == (made[:12], None)


def test_the_short_id_is_the_random_end() -> None:
    """Two ids made the same millisecond differ in what is shown."""
    first, second = new_id(), new_id()
    assert first[:8] == second[:8]  # the time: alike
    assert short_id(first) == first[-8:] != short_id(second)
