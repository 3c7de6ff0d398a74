"""What a queue's figures mean (``core.queue_figures``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from server.core.queue_figures import COUNTED_STATES, THROUGHPUT_WINDOW, QueueFigures, figures

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def test_every_state_is_counted_zeros_included_in_a_fixed_order() -> None:
    made = figures({"active": 2, "delayed": 1}, oldest_waiting=None, completed=0, now=NOW)
    assert list(made.counts) == list(COUNTED_STATES)
    assert made == QueueFigures(counts={**dict.fromkeys(COUNTED_STATES, 0), "active": 2,
                                        "delayed": 1},
                                oldest_waiting_s=None, throughput_per_min=0.0)


def test_the_oldest_wait_in_tenths_and_completions_per_minute_over_the_window() -> None:
    assert THROUGHPUT_WINDOW == timedelta(minutes=5)
    made = figures({}, oldest_waiting=NOW - timedelta(seconds=90.04), completed=3, now=NOW)
    assert (made.oldest_waiting_s, made.throughput_per_min) == (90.0, 0.6)
