"""The workers panel: every worker process's last report (``workers.middleware.roster``),
alive or dead, read from Redis by any web process."""

from __future__ import annotations

import time
from datetime import datetime

import msgspec

from server.core import keys
from server.core.wire import responses as wire
from server.services.context import Services

# Reports read per look: far more processes than a deployment of this service runs.
MAX_WORKERS_SHOWN = 500


async def roster(state: Services, *, now: float | None = None) -> list[wire.Worker]:
    """Alive processes first, then the dead (silent past WORKER_HEARTBEAT_TIMEOUT_MS) that
    are not gone yet; those whose report expired (WORKER_FORGET_S) leave the roster."""
    prefix = state.settings.redis_prefix
    key = keys.worker_roster(prefix)
    ids = [m.decode() if isinstance(m, bytes) else str(m)
           for m in await state.redis.zrevrange(key, 0, MAX_WORKERS_SHOWN - 1)]
    if not ids:
        return []
    reports = await state.redis.mget([keys.worker_report(prefix, i) for i in ids])
    gone = [i for i, report in zip(ids, reports, strict=True) if report is None]
    if gone:
        await state.redis.zrem(key, *gone)
    clock = time.time() if now is None else now
    timeout_s = state.settings.worker_heartbeat_timeout_ms / 1000
    found = []
    for report in reports:
        if report is None:
            continue
        worker = msgspec.json.decode(report, type=wire.Worker)
        age = max(0.0, clock - datetime.fromisoformat(worker.reported_at).timestamp())
        found.append(msgspec.structs.replace(worker, heartbeat_age_s=round(age, 1),
                                             alive=age < timeout_s))
    return sorted(found, key=lambda w: (not w.alive, w.host, w.pid))
