"""The dashboard's charts (pure): one point per minute, made from the shared metrics.

The shared metrics (``server.infra.metrics``) only grow. Once a minute one web process
takes the whole hash, subtracts the copy it kept a minute before (``delta``) and turns
the difference into a ``wire.ChartPoint`` (``point``): jobs finished and failed, uploads
accepted and refused, queue depth at that moment, and p50/p95 of the wait before a run,
the run itself (by queue), each image stage and the push delay, read from the
histograms' buckets (``quantiles``). ``server.services.charts`` stores the points.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime

from server.core.wire import responses as wire
from server.infra import metrics

# A day of minutes: the longest window the dashboard draws.
MAX_POINTS = 24 * 60
# The stages charted: the image pipeline's (other types' stages are their own business).
CHARTED_TYPE = "image.process"


def delta(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    """What each field of the shared hash gained; a field that shrank was reset (the
    hash was cleared, say): all of its value is new."""
    gained = {}
    for name, value in after.items():
        grown = value - before.get(name, 0.0)
        gained[name] = value if grown < 0 else grown
    return {name: value for name, value in gained.items() if value}


def quantiles(bounds: Sequence[float], counts: Sequence[float]) -> wire.Quantiles | None:
    """p50 and p95 of observations in buckets (``counts[i]`` at or below ``bounds[i]``
    and above the bound before; the last bound may be ``inf``), interpolated linearly
    within the bucket; None when nothing was observed."""
    total = sum(counts)
    if total <= 0:
        return None

    def at(q: float) -> float:
        wanted, seen, low = q * total, 0.0, 0.0
        for bound, count in zip(bounds, counts, strict=True):
            if count and seen + count >= wanted:
                if math.isinf(bound):
                    return low  # past the last bound: the last bound is all we know
                return low + (bound - low) * (wanted - seen) / count
            seen += count
            low = bound if not math.isinf(bound) else low
        return low

    return wire.Quantiles(p50=round(at(0.5), 4), p95=round(at(0.95), 4), count=int(total))


def _buckets(histogram: metrics.Histogram, grouped: metrics.Grouped,
             keep: Callable[[dict[str, str]], str | None]) -> dict[str, list[float]]:
    """Per-bucket counts summed by the key ``keep`` gives each series (None: skipped)."""
    bounds = (*histogram.buckets, math.inf)
    summed: dict[str, list[float]] = {}
    for series in metrics.histogram_series(histogram, grouped):
        key = keep(dict(series.labels))
        if key is None:
            continue
        cumulative = [count for _, count in series.buckets]
        own = [c - (cumulative[i - 1] if i else 0.0) for i, c in enumerate(cumulative)]
        into = summed.setdefault(key, [0.0] * len(bounds))
        for i, count in enumerate(own):
            into[i] += count
    return summed


def _by(histogram: metrics.Histogram, grouped: metrics.Grouped,
        keep: Callable[[dict[str, str]], str | None]) -> dict[str, wire.Quantiles]:
    bounds = (*histogram.buckets, math.inf)
    found = {key: quantiles(bounds, counts)
             for key, counts in _buckets(histogram, grouped, keep).items()}
    return {key: value for key, value in sorted(found.items()) if value is not None}


def point(minute: datetime, gained: Mapping[str, float], *, depth: Mapping[str, int],
          queue_of: Callable[[str], str]) -> wire.ChartPoint:
    """The point of the minute starting at ``minute``: what the shared metrics gained in
    it (``delta``), and each queue's waiting jobs (``depth``) as it ended.

    ``queue_of``: a job type's base queue (``image.process`` → ``images``).
    """
    grouped = metrics.group_samples(gained)
    runs: dict[str, float] = {}
    for series in metrics.histogram_series(metrics.RUN_DURATION, grouped):
        outcome = dict(series.labels).get("outcome", "")
        runs[outcome] = runs.get(outcome, 0.0) + series.buckets[-1][1]
    uploads: dict[str, float] = {}
    for labels, count in metrics.counter_series(metrics.UPLOADS, grouped):
        outcome = dict(labels).get("outcome", "")
        uploads[outcome] = uploads.get(outcome, 0.0) + count
    push = _by(metrics.RELAY_DELAY, grouped, lambda labels: "all")
    return wire.ChartPoint(
        at=minute.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        finished=int(runs.get("completed", 0)),
        failed=int(runs.get("failed", 0)),
        retried=int(runs.get("retrying", 0)),
        uploads_accepted=int(uploads.get("accepted", 0) + uploads.get("duplicate", 0)),
        uploads_refused=int(uploads.get("rejected", 0)),
        queue_depth=dict(sorted(depth.items())),
        wait=_by(metrics.WAIT_DURATION, grouped, lambda labels: queue_of(labels["type"])),
        run=_by(metrics.RUN_DURATION, grouped, lambda labels: queue_of(labels["type"])),
        stages=_by(metrics.STAGE_DURATION, grouped,
                   lambda labels: labels["stage"] if labels["type"] == CHARTED_TYPE else None),
        push=push.get("all"),
    )
