"""How far a batch has got (``core.batches``)."""

from __future__ import annotations

from server.core.batches import BatchTally, tally


def test_tally_counts_ended_jobs_as_done_and_averages_progress() -> None:
    jobs = [("completed", 100), ("failed", 30), ("cancelled", 0), ("active", 65),
            ("queued", 0), ("retrying", 10)]
    assert tally(jobs) == BatchTally(total=6, done=1, failed=2,
                                     progress=round((100 * 3 + 65 + 0 + 10) / 6))


def test_an_empty_batch_is_complete() -> None:
    assert tally([]) == BatchTally(total=0, done=0, failed=0, progress=100)
