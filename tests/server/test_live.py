"""A running job's live state (``server.core.live``): what readers show, and the seqs
that keep every event ordered."""

from __future__ import annotations

import pytest

from server.core import live
from server.core.live import LiveState

RUNNING = LiveState(attempt=2, seq=7, stage="preview", progress=65)


@pytest.mark.parametrize(("state", "attempt", "seq", "expected"), [
    ("active", 2, 5, RUNNING),            # pushed after the row was written: shown
    ("active", 2, 7, None),               # the row already has it
    ("active", 2, 8, None),               # the row is newer (a step that went to the db)
    ("active", 3, 5, None),               # another attempt runs now
    ("completed", 2, 5, None),            # the row has ended: the row wins
    ("retrying", 2, 5, None),
])
def test_shown_only_over_an_active_row_of_the_same_attempt(
        state: str, attempt: int, seq: int, expected: LiveState | None) -> None:
    assert live.shown(state, attempt, seq, RUNNING) == expected


def test_an_ended_attempts_last_step_shows_over_a_row_read_before_its_end() -> None:
    """The hash keeps the last step when the attempt ends (``ended``: the end's seq): a
    row read before that end shows it; a row read after is final and shows itself."""
    ended = LiveState(attempt=2, seq=7, stage="preview", progress=65, ended=108)
    assert live.shown("active", 2, 5, ended) == ended
    assert live.shown("completed", 2, 108, ended) is None
    assert live.shown("active", 2, 5, None) is None


def test_a_write_to_an_active_job_outranks_its_attempts_pushes() -> None:
    """Every push of an attempt takes a seq in (row, row + SEQ_BLOCK]: a database write
    made meanwhile (a cancel, the end) goes past all of them."""
    assert live.next_seq(5, "active") == 5 + live.SEQ_BLOCK + 1
    assert live.next_seq(5, "queued") == 6
    assert live.next_seq(5, "retrying") == 6


@pytest.mark.parametrize(("values", "expected"), [
    ([b"2", b"7", b"preview", b"65", None], RUNNING),
    (["2", "9", "preview", "65", "110"],
     LiveState(attempt=2, seq=9, stage="preview", progress=65, ended=110)),
    ([None, None, None, None, None], None),     # no hash
    ([None, b"9", None, None, b"1"], None),      # no attempt: not a state to show
    ([b"x", b"7", b"preview", b"65", None], None),
    ([b"2", b"7"], None),
])
def test_parse_reads_the_hash_or_nothing(values: list[bytes | str | None],
                                         expected: LiveState | None) -> None:
    assert live.parse(values) == expected
