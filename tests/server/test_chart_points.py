"""The charts' points in Redis (``server.services.charts``): one web process makes each
minute's point from the shared metrics, and they are read back for a window."""

from __future__ import annotations

import time
from typing import Any, cast

import pytest

from server.core.tasks import IMAGE_PROCESS
from server.infra import metrics, telemetry
from server.services import charts
from tests.server.test_dispatch import State, new_job, state  # noqa: F401 (the fixture)

pytestmark = pytest.mark.integration


async def test_each_minute_has_one_point_of_what_the_metrics_gained(state: State) -> None:  # noqa: F811
    services = cast(Any, state)
    services.task_types = {**state.task_types, IMAGE_PROCESS.name: IMAGE_PROCESS}
    prefix = state.settings.redis_prefix
    tally = metrics.Tally()
    tally.observe(metrics.RUN_DURATION, 1.0, type="image.process", outcome="completed")
    await telemetry.flush(state.redis, prefix, tally)
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
