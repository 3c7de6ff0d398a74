"""The wait a run is measured by (``workers.middleware.timings.waited_s``): from when the
job could run, which a dead letter's retry moves to the retry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from workers.middleware.timings import waited_s

MADE = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def test_a_new_job_waits_from_when_it_was_made() -> None:
    assert waited_s(made=MADE, run_at=None, queued_ms=None,
                    began=MADE + timedelta(seconds=2)) == 2.0
    # SQLite hands back naive times (UTC).
    assert waited_s(made=MADE.replace(tzinfo=None), run_at=None, queued_ms=None,
                    began=(MADE + timedelta(seconds=2.5)).replace(tzinfo=None)) == 2.5


def test_a_delayed_or_retried_run_waits_from_when_it_was_due() -> None:
    due = MADE + timedelta(minutes=5)
    assert waited_s(made=MADE, run_at=due, queued_ms=None,
                    began=due + timedelta(seconds=1)) == 1.0


def test_a_dead_letters_retry_waits_from_the_retry_not_from_when_the_job_was_made() -> None:
    retried = MADE + timedelta(days=2, milliseconds=250)
    assert waited_s(made=MADE, run_at=None, queued_ms=_ms(retried),
                    began=retried + timedelta(seconds=0.5)) == 0.5
    assert waited_s(made=MADE.replace(tzinfo=None), run_at=None, queued_ms=_ms(retried),
                    began=(retried + timedelta(seconds=0.5)).replace(tzinfo=None)) == 0.5


def test_a_retried_dead_letter_that_fails_again_waits_from_its_back_off_end() -> None:
    retried = MADE + timedelta(days=2)
    due = retried + timedelta(minutes=10)  # its next attempt's back-off, after the retry
    assert waited_s(made=MADE, run_at=due, queued_ms=_ms(retried),
                    began=due + timedelta(seconds=1)) == 1.0


def test_clocks_apart_never_make_a_negative_wait() -> None:
    assert waited_s(made=MADE, run_at=None, queued_ms=_ms(MADE + timedelta(seconds=1)),
                    began=MADE) == 0.0
