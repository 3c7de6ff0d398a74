"""Per-user upload rate limit, counted in Redis so every web process shares it."""

from __future__ import annotations

import time
from typing import Any

from server import keys
from server.errors import ApiError

WINDOW_S = 60


async def check_uploads(state: Any, user_id: str, files: int = 1) -> None:
    """Count ``files`` uploads for the user in this minute; 429 past RATE_LIMIT_UPLOADS_PER_MIN."""
    limit = state.settings.rate_limit_uploads_per_min
    if limit <= 0:
        return
    now = time.time()
    window = int(now // WINDOW_S)
    key = keys.upload_rate(state.settings.redis_prefix, user_id, window)
    async with state.redis.pipeline(transaction=True) as pipe:
        pipe.incrby(key, files)
        pipe.expire(key, WINDOW_S * 2)
        count, _ = await pipe.execute()
    if int(count) > limit:
        retry_after = max(1, int((window + 1) * WINDOW_S - now) + 1)
        raise ApiError(429, "rate_limited",
                       f"at most {limit} uploads per minute; try again in {retry_after} s",
                       headers={"Retry-After": str(retry_after)})
