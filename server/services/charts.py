"""The dashboard's charts: a point a minute from the shared metrics, kept in Redis for a
day (``server.infra.charts`` makes each point), and read back for a window; and the minute
still running so far (``so_far``: pushed and shown, never kept)."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import Any

import msgspec
import redis

from server.core import keys
from server.core.jobs import base_queue
from server.core.wire import responses as wire
from server.infra import charts, telemetry
from server.services.context import Services
from server.services.queues import queue_report

log = logging.getLogger(__name__)

# Sample a little after the minute turns, so increments flushed at its end are in.
_AFTER_MINUTE_S = 2.0


class _Snapshot(msgspec.Struct, frozen=True):
    """The shared metrics as they stood when the point of ``minute`` was made."""

    minute: int
    samples: dict[str, float]


async def sample(state: Services, *, now: float | None = None) -> wire.ChartPoint | None:
    """Make the point of the minute that just ended, unless another web process did; None
    when this one did not make it (or there is no earlier snapshot to subtract)."""
    prefix = state.settings.redis_prefix
    clock = time.time() if now is None else now
    minute = int(clock // 60) - 1  # the minute that just ended
    if not await state.redis.set(keys.chart_minute(prefix, minute), "1", nx=True, ex=180):
        return None
    samples = await _samples(state)
    raw_before = await state.redis.getset(keys.chart_snapshot(prefix), msgspec.json.encode(
        _Snapshot(minute=minute, samples=samples)))
    # None for the first sample (the next minute has something to subtract), and for a
    # stretch when no web process sampled: what the metrics gained then would show as one
    # minute's spike.
    before = _snapshot_before(raw_before, minute)
    if before is None:
        return None
    made = _point(state, minute, before.samples, samples,
                  depth=queue_depth(await queue_report(state)))
    pipe = state.redis.pipeline(transaction=False)
    pipe.rpush(keys.chart_points(prefix), msgspec.json.encode(made))
    pipe.ltrim(keys.chart_points(prefix), -charts.MAX_POINTS, -1)
    await pipe.execute()
    return made


async def so_far(state: Services, *, now: float | None = None,
                 depth: dict[str, int] | None = None) -> wire.ChartPoint | None:
    """The minute still running, from its start to now (``partial``; never stored): what
    the shared metrics gained since the snapshot the point of the minute before left. None
    when there is no such snapshot (a deployment's first minutes, or the seconds after the
    minute turns before its point is made). ``depth``: each queue's waiting jobs, when the
    caller has them (``queue_depth``)."""
    clock = time.time() if now is None else now
    minute = int(clock // 60)
    before = _snapshot_before(
        await state.redis.get(keys.chart_snapshot(state.settings.redis_prefix)), minute)
    if before is None:
        return None
    if depth is None:
        depth = queue_depth(await queue_report(state))
    made = _point(state, minute, before.samples, await _samples(state), depth=depth)
    return msgspec.structs.replace(made, partial=True)


def _snapshot_before(raw: bytes | str | None, minute: int) -> _Snapshot | None:
    """The stored snapshot if it ends the minute before ``minute`` (so ``minute`` is counted
    from it); None when there is none, it is unreadable, or it is of another minute."""
    if raw is None:
        return None
    try:
        before = msgspec.json.decode(raw, type=_Snapshot)
    except msgspec.DecodeError:
        return None
    return before if before.minute == minute - 1 else None


def queue_depth(report: dict[str, Any]) -> dict[str, int]:
    """Waiting jobs (queued or retrying) per queue, from ``queue_report``'s answer."""
    return {q["name"]: int(q["counts"]["queued"] + q["counts"]["retrying"])
            for q in report["queues"]}


def _point(state: Services, minute: int, before: dict[str, float], after: dict[str, float],
           *, depth: dict[str, int]) -> wire.ChartPoint:
    return charts.point(datetime.fromtimestamp(minute * 60, UTC), charts.delta(before, after),
                        depth=depth, queue_of=lambda t: _queue_of(state, t))


async def _samples(state: Services) -> dict[str, float]:
    """The shared metrics as they stand, numbers only."""
    found = await telemetry.read_samples(state.redis, state.settings.redis_prefix)
    return {_text(k): float(v) for k, v in found.items() if _is_number(v)}


async def points(state: Services, minutes: int) -> list[wire.ChartPoint]:
    """The points of the last ``minutes`` minutes, oldest first."""
    since = datetime.fromtimestamp((time.time() // 60 - minutes) * 60, UTC)
    raw = await state.redis.lrange(keys.chart_points(state.settings.redis_prefix),
                                   -minutes, -1)
    found = [msgspec.json.decode(item, type=wire.ChartPoint) for item in raw]
    return [p for p in found if datetime.fromisoformat(p.at) >= since]


async def window(state: Services, minutes: int) -> list[wire.ChartPoint]:
    """What the charts show: the points of the last ``minutes``, then the minute still
    running so far when there is one."""
    found = await points(state, minutes)
    try:
        running = await so_far(state)
    except Exception as exc:  # the minutes kept are shown all the same
        log.warning("could not count the minute so far: %s", exc)
        return found
    return [*found, running] if running is not None else found


async def start(state: Services) -> None:
    """A deployment's first snapshot, as a web process starts on a fresh Redis: the minute
    so far, and this minute's point, count from now (the metrics are fresh too) instead of
    from the next minute. Where a snapshot exists it is left as it is."""
    minute = int(time.time() // 60) - 1
    await state.redis.set(keys.chart_snapshot(state.settings.redis_prefix), msgspec.json.encode(
        _Snapshot(minute=minute, samples=await _samples(state))), nx=True)


async def sample_forever(state: Services) -> None:
    """A lifespan task: a point each minute (whichever web process claims it makes it)."""
    try:
        await start(state)
    except Exception as exc:
        log.warning("could not take the charts' first snapshot: %s", exc)
    while True:
        await asyncio.sleep(60 - time.time() % 60 + _AFTER_MINUTE_S)
        try:
            await sample(state)
        except (redis.RedisError, OSError) as exc:
            log.warning("could not make the charts' point: %s", exc)
        except Exception:
            log.exception("could not make the charts' point")


def _queue_of(state: Services, task_type: str) -> str:
    spec = state.task_types.get(task_type)
    return base_queue(spec.queue) if spec is not None else "other"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _is_number(value: bytes | str) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True
