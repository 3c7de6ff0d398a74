"""Rates and quotas, counted in Redis so every web process shares them.

One fixed-window counter serves them all: uploads and task submissions per user per
minute, new sessions per client address per minute, high-priority jobs per user per hour.
A window is a key that expires; a refused request takes nothing from the allowance, and
what a request took is given back (``give_back``) when it turns out to need none.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from server.core import keys
from server.core.errors import ApiError, Problem

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from server.core.principal import Principal
    from server.infra.settings import Settings

MINUTE_S = 60
HOUR_S = 3600

# Count the request only if it fits: a refused request uses none of the allowance.
_TAKE = """
local used = tonumber(redis.call("get", KEYS[1]) or "0")
local wanted = tonumber(ARGV[1])
if used + wanted > tonumber(ARGV[2]) then return -1 end
redis.call("incrby", KEYS[1], wanted)
redis.call("expire", KEYS[1], ARGV[3])
return used + wanted
"""
# Give back to the window it was taken from (never below zero; an expired one stays gone).
_GIVE_BACK = """
local used = tonumber(redis.call("get", KEYS[1]) or "0")
local back = math.min(used, tonumber(ARGV[1]))
if back > 0 then redis.call("decrby", KEYS[1], back) end
return back
"""


@dataclass(frozen=True)
class Rate:
    """At most ``limit`` of something per ``window_s``, per subject (a user, an address)."""

    name: str  # in the Redis key
    what: str  # in the refusal: "at most 120 {what} per minute"
    limit: int  # 0: no limit
    window_s: int = MINUTE_S


@dataclass(frozen=True)
class Taken:
    """What ``take`` took: from which window's key, how much."""

    key: str
    amount: int


def window_of(now: float, window_s: int) -> int:
    """The number of the fixed window ``now`` falls in."""
    return int(now // window_s)


def retry_after(now: float, window_s: int) -> int:
    """Whole seconds until the window ``now`` falls in is over (at least 1)."""
    end = (window_of(now, window_s) + 1) * window_s
    return max(1, math.ceil(end - now))


def refusal(rate: Rate, now: float) -> ApiError:
    """The 429 for a spent allowance, with when to come back."""
    wait = retry_after(now, rate.window_s)
    per = "minute" if rate.window_s == MINUTE_S else \
        "hour" if rate.window_s == HOUR_S else f"{rate.window_s} s"
    return ApiError(Problem.RATE_LIMITED, "rate_limited",
                    f"at most {rate.limit} {rate.what} per {per}; try again in {wait} s",
                    retry_after_s=wait)


def window_key(prefix: str, rate: Rate, subject: str, now: float) -> str:
    """The key counting ``subject``'s use of ``rate`` in the window ``now`` falls in."""
    return keys.rate_window(prefix, rate.name, subject, window_of(now, rate.window_s))


async def take(client: Any, prefix: str, rate: Rate, subject: str,
               amount: int = 1) -> Taken | None:
    """Take ``amount`` from ``subject``'s allowance in this window, or raise the 429
    (``client``: an asyncio Redis client). What was taken, for ``give_back`` (None when
    nothing was: no limit, or ``amount=0``).

    ``amount=0`` only checks that some allowance is left (before a body is read).
    """
    if rate.limit <= 0:
        return None
    now = time.time()
    key = window_key(prefix, rate, subject, now)
    if amount > 0:
        fits = int(await client.eval(_TAKE, 1, key, amount, rate.limit, rate.window_s * 2)) >= 0
    else:
        fits = int(await client.get(key) or 0) < rate.limit
    if not fits:
        raise refusal(rate, now)
    return Taken(key, amount) if amount > 0 else None


async def give_back(client: Any, taken: Taken | None, amount: int | None = None) -> None:
    """Return ``amount`` (all, by default) of what ``take`` took to the window it came
    from: for a request that was refused after all, or needed less than it took."""
    if taken is None:
        return
    back = taken.amount if amount is None else min(amount, taken.amount)
    if back > 0:
        await client.eval(_GIVE_BACK, 1, taken.key, back)


class Limited(Protocol):
    """What the checks below need of a process's state (``Services`` fits)."""

    @property
    def redis(self) -> aioredis.Redis: ...

    @property
    def settings(self) -> Settings: ...


async def _take(state: Limited, rate: Rate, subject: str, amount: int = 1) -> Taken | None:
    return await take(state.redis, state.settings.redis_prefix, rate, subject, amount)


def uploads_rate(settings: Settings) -> Rate:
    """Each user's upload allowance: RATE_LIMIT_UPLOADS_PER_MIN files a minute."""
    return Rate("uploads", "uploads", settings.rate_limit_uploads_per_min)


async def check_uploads(state: Limited, user_id: str, files: int = 1) -> Taken | None:
    """Take ``files`` uploads from the user's allowance for this minute, or answer 429.

    ``files=0`` only checks that some allowance is left (before a batch body is read).
    """
    return await _take(state, uploads_rate(state.settings), user_id, files)


async def check_tasks(state: Limited, user_id: str) -> None:
    """One task submission (``POST /api/tasks``) from the user's allowance, or 429."""
    rate = Rate("tasks", "task submissions", state.settings.rate_limit_tasks_per_min)
    await _take(state, rate, user_id)


async def check_sessions(state: Limited, address_key: str) -> None:
    """One new session from the client address's allowance (``client_address.limit_key``)."""
    rate = Rate("sessions", "new sessions per address",
                state.settings.rate_limit_sessions_per_min)
    await _take(state, rate, address_key)


async def check_high_priority(state: Limited, principal: Principal, priority: str,
                              jobs: int = 1) -> Taken | None:
    """``priority: high`` jumps every other user's waiting work: admins may, plain users
    within HIGH_PRIORITY_PER_HOUR jobs (403 when that is 0, 429 once it is spent). What
    was taken, to ``give_back`` for the jobs that are not made after all (duplicates,
    refused files)."""
    if priority != "high" or principal.is_admin:
        return None
    per_hour = state.settings.high_priority_per_hour
    if per_hour <= 0:
        raise ApiError(Problem.FORBIDDEN, "priority_not_allowed",
                       "priority high needs an admin token on this server; "
                       "use normal or low")
    rate = Rate("high-priority", "high-priority jobs", per_hour, HOUR_S)
    return await _take(state, rate, principal.user_id, jobs)
