"""The charts' points in Redis (``server.services.charts``): one web process makes each
minute's point from the shared metrics, and they are read back for a window."""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

import msgspec
import pytest

from server.core import keys
from server.core.tasks import IMAGE_PROCESS
from server.infra import metrics, telemetry
from server.services import charts
from tests.server.test_dispatch import State, new_job, state  # noqa: F401 (the fixture)

pytestmark = pytest.mark.integration


async def _charted_with_a_run(state: State) -> tuple[Any, str, metrics.Tally]:  # noqa: F811
    """The services with image.process registered (the images queue's stages), their
    metrics' prefix, and a tally that has already put one completed run in them."""
    services = cast(Any, state)
    services.task_types = {**state.task_types, IMAGE_PROCESS.name: IMAGE_PROCESS}
    prefix = state.settings.redis_prefix
    tally = metrics.Tally()
    tally.observe(metrics.RUN_DURATION, 1.0, type="image.process", outcome="completed")
    await telemetry.flush(state.redis, prefix, tally)
    return services, prefix, tally


async def test_each_minute_has_one_point_of_what_the_metrics_gained(state: State) -> None:  # noqa: F811
    services, prefix, tally = await _charted_with_a_run(state)
    start = (time.time() // 60) * 60 + 1  # a second into this minute
    # The first sample only keeps what the metrics hold now: nothing to subtract from.
    assert await charts.sample(services, now=start - 60) is None
    await new_job(state)  # one waiting job in the default queue
    for seconds in (0.2, 0.3):
        tally.observe(metrics.RUN_DURATION, seconds, type="image.process", outcome="completed")
    tally.observe(metrics.RUN_DURATION, 0.1, type="image.process", outcome="failed")
    await telemetry.flush(state.redis, prefix, tally)

    made = await charts.sample(services, now=start)
    assert made is not None
    assert (made.finished, made.failed) == (2, 1)  # the minute's runs only
    assert made.run["images"].count == 3
    assert made.queue_depth["default"] == 1
    # Another web process, the same minute: the point is made once.
    assert await charts.sample(services, now=start + 5) is None
    assert [p.at for p in await charts.points(services, 60)] == [made.at]
    assert await charts.points(services, 1) == [made]
    # After minutes nobody sampled (every web process down), no point sums them up.
    assert await charts.sample(services, now=start + 300) is None
    assert await charts.sample(services, now=start + 360) is not None


async def test_the_minute_so_far_counts_from_its_start_and_is_never_kept(state: State) -> None:  # noqa: F811
    services, prefix, tally = await _charted_with_a_run(state)
    if time.time() % 60 > 50:  # charts.window below counts at the real time: the same minute
        await asyncio.sleep(61 - time.time() % 60)
    start = (time.time() // 60) * 60 + 1  # a second into this minute
    # No snapshot yet (a deployment's first minute): nothing to count from.
    assert await charts.so_far(services, now=start) is None
    assert await charts.sample(services, now=start) is None  # the snapshot the minute starts at
    # Its first seconds: one run, one upload and one waiting job so far.
    tally.observe(metrics.RUN_DURATION, 0.4, type="image.process", outcome="completed")
    tally.inc(metrics.UPLOADS, outcome="accepted", status="202", reason="")
    await telemetry.flush(state.redis, prefix, tally)
    await new_job(state)
    running = await charts.so_far(services, now=start + 20)
    assert running is not None and running.partial
    assert running.at == time.strftime("%Y-%m-%dT%H:%M:00Z", time.gmtime(start))
    assert (running.finished, running.uploads_accepted) == (1, 1)
    assert running.run["images"].count == 1 and running.queue_depth["default"] == 1
    # What the caller already counted is taken as the depth.
    assert (await charts.so_far(services, now=start + 20, depth={"images": 4})
            ).queue_depth == {"images": 4}  # type: ignore[union-attr]
    # The charts' window ends with it; nothing of it is stored.
    assert await charts.points(services, 60) == []
    assert await charts.window(services, 60) == [running]
    # Once the minute has ended and before its point is made (or when no web process made
    # it), there is no minute so far: the snapshot is the minute before the last.
    assert await charts.so_far(services, now=start + 60) is None
    # The minute's own point counts what the minute so far counted, and more.
    tally.observe(metrics.RUN_DURATION, 0.2, type="image.process", outcome="failed")
    await telemetry.flush(state.redis, prefix, tally)
    made = await charts.sample(services, now=start + 60)
    assert made is not None and not made.partial and made.at == running.at
    assert (made.finished, made.failed) == (1, 1)
    assert await charts.points(services, 60) == [made]


async def test_a_fresh_deployment_counts_its_first_minute_from_its_start(state: State) -> None:  # noqa: F811
    services, prefix, tally = await _charted_with_a_run(state)
    if time.time() % 60 > 50:  # the minute so far is read at the real time below
        await asyncio.sleep(61 - time.time() % 60)
    assert await charts.so_far(services) is None  # no snapshot: nothing to count from
    await charts.start(services)
    tally.observe(metrics.RUN_DURATION, 0.5, type="image.process", outcome="completed")
    await telemetry.flush(state.redis, prefix, tally)
    running = await charts.so_far(services)
    assert running is not None and running.finished == 1  # since the start only
    # Another web process starting later leaves the snapshot as it is.
    await charts.start(services)
    assert (await charts.so_far(services)).finished == 1  # type: ignore[union-attr]
    # The minute's own point, when it ends, counts from the same start.
    made = await charts.sample(services, now=time.time() + 60)
    assert made is not None and made.at == running.at and made.finished == 1
    # Stored points leave ``partial`` out (as an earlier version wrote and reads them).
    raw = await state.redis.lrange(keys.chart_points(prefix), -1, -1)
    assert b"partial" not in raw[0]
    assert b'"partial":true' in msgspec.json.encode(running)
