"""The charts' points from the shared metrics (``server.infra.charts``, pure)."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from server.core.wire import responses as wire
from server.infra import charts, metrics

MINUTE = datetime(2026, 12, 6, 9, 30, tzinfo=UTC)
QUEUES = {"image.process": "images", "webhook.deliver": "webhooks"}


def _hash(*tallies: metrics.Tally) -> dict[str, float]:
    """The shared hash the tallies' increments make (as ``telemetry`` writes them)."""
    total: dict[str, float] = {}
    for tally in tallies:
        drained = tally.drain()
        for name, value in (*drained.counts.items(), *drained.sums.items()):
            total[name] = total.get(name, 0.0) + value
    return total


def test_delta_is_what_each_field_gained_and_a_shrunk_field_was_reset() -> None:
    assert charts.delta({"a": 5, "b": 2, "c": 7}, {"a": 9, "b": 2, "c": 3, "d": 1}) == {
        "a": 4, "c": 3, "d": 1}


def test_quantiles_interpolate_within_the_bucket() -> None:
    # 10 observations: 5 at or below 0.1, 4 in (0.1, 1], 1 past the last bound.
    found = charts.quantiles((0.1, 1.0, math.inf), (5, 4, 1))
    assert found == wire.Quantiles(p50=0.1, p95=1.0, count=10)
    assert charts.quantiles((1.0, 2.0, math.inf), (0, 4, 0)) == wire.Quantiles(
        p50=1.5, p95=1.95, count=4)
    assert charts.quantiles((1.0, math.inf), (0, 0)) is None


def test_a_minutes_point_counts_runs_uploads_and_reads_each_timing() -> None:
    earlier, during = metrics.Tally(), metrics.Tally()
    earlier.observe(metrics.RUN_DURATION, 3.0, type="image.process", outcome="completed")
    earlier.inc(metrics.UPLOADS, outcome="accepted", status="202", reason="")
    for seconds in (0.2, 0.2, 0.4):
        during.observe(metrics.RUN_DURATION, seconds, type="image.process", outcome="completed")
    during.observe(metrics.RUN_DURATION, 0.03, type="webhook.deliver", outcome="failed")
    during.observe(metrics.RUN_DURATION, 0.03, type="webhook.deliver", outcome="retrying")
    during.inc(metrics.UPLOADS, 2, outcome="accepted", status="202", reason="")
    during.inc(metrics.UPLOADS, outcome="duplicate", status="200", reason="")
    during.inc(metrics.UPLOADS, outcome="rejected", status="415", reason="unsupported")
    during.observe(metrics.WAIT_DURATION, 0.07, type="image.process")
    during.observe(metrics.STAGE_DURATION, 0.02, type="image.process", stage="decoding")
    during.observe(metrics.STAGE_DURATION, 9.0, type="album.make", stage="decoding")
    during.observe(metrics.RELAY_DELAY, 0.002)
    before = _hash(earlier)
    after = {**before}
    for name, value in _hash(during).items():
        after[name] = after.get(name, 0.0) + value

    made = charts.point(MINUTE, charts.delta(before, after), depth={"images": 7, "default": 0},
                        queue_of=QUEUES.__getitem__)
    assert made.at == "2026-12-06T09:30:00Z"
    assert (made.finished, made.failed, made.retried) == (3, 1, 1)  # not the earlier run
    assert (made.uploads_accepted, made.uploads_refused) == (3, 1)
    assert made.queue_depth == {"default": 0, "images": 7}
    assert set(made.run) == {"images", "webhooks"} and made.run["images"].count == 3
    assert 0.1 < made.run["images"].p50 <= 0.25 and made.run["images"].p95 <= 0.5
    assert made.wait["images"].count == 1 and made.wait["images"].p50 <= 0.1
    assert set(made.stages) == {"decoding"} and made.stages["decoding"].count == 1  # images'
    assert made.push is not None and made.push.count == 1 and made.push.p95 <= 0.0025


def test_a_quiet_minute_is_a_point_of_zeros() -> None:
    made = charts.point(MINUTE, {}, depth={}, queue_of=QUEUES.__getitem__)
    assert (made.finished, made.uploads_accepted, made.run, made.stages, made.push) == (
        0, 0, {}, {}, None)
