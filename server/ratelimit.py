"""Per-user upload rate limit, counted in Redis so every web process shares it."""

from __future__ import annotations

import time
from typing import Any

from server import keys
from server.errors import ApiError

WINDOW_S = 60

# Count the uploads only if they fit: a refused request uses none of the allowance.
_TAKE = """
local used = tonumber(redis.call("get", KEYS[1]) or "0")
local wanted = tonumber(ARGV[1])
if used + wanted > tonumber(ARGV[2]) then return -1 end
redis.call("incrby", KEYS[1], wanted)
redis.call("expire", KEYS[1], ARGV[3])
return used + wanted
"""


async def check_uploads(state: Any, user_id: str, files: int = 1) -> None:
    """Take ``files`` uploads from the user's allowance for this minute, or answer 429.

    ``files=0`` only checks that some allowance is left (before a batch body is read).
    """
    limit = state.settings.rate_limit_uploads_per_min
    if limit <= 0:
        return
    now = time.time()
    window = int(now // WINDOW_S)
    key = keys.upload_rate(state.settings.redis_prefix, user_id, window)
    wanted = files if files > 0 else 1
    if files > 0:
        taken = int(await state.redis.eval(_TAKE, 1, key, wanted, limit, WINDOW_S * 2))
    else:
        used = int(await state.redis.get(key) or 0)
        taken = -1 if used + wanted > limit else used
    if taken < 0:
        retry_after = max(1, int((window + 1) * WINDOW_S - now) + 1)
        raise ApiError(429, "rate_limited",
                       f"at most {limit} uploads per minute; try again in {retry_after} s",
                       headers={"Retry-After": str(retry_after)})
