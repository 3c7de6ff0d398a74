"""Who e-mail may go to and how much of it (pure: the Redis client is passed in).

``email.send`` goes out through the operator's SMTP relay with the operator's From
address, so it must not be an open relay: exactly one recipient per message, plain users
only to the addresses and domains the operator lists (EMAIL_ALLOWED_RECIPIENTS; admins to
anyone), and per-user and deployment-wide send rates.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable
from dataclasses import dataclass
from email.utils import getaddresses
from typing import Any

WINDOW_S = 3600
_UNSAFE = frozenset(" \t\r\n,;<>()[]\\\"")


def single_address(value: str) -> str | None:
    """The one bare address ``value`` is (``ana@example.com``), or None.

    ``getaddresses`` finds every address a header value names: ``"a@x.com,postmaster"`` is
    two, ``"Ana <a@x.com>"`` one with a name. Only a value that is exactly one bare address
    passes, so what is checked is what the envelope and the To header carry.
    """
    found = getaddresses([value])
    if len(found) != 1:
        return None
    name, address = found[0]
    if name or address != value or address.count("@") != 1:
        return None
    local, domain = address.split("@")
    if not local or not domain or any(c in _UNSAFE or ord(c) < 32 for c in address):
        return None
    return address


def recipient_allowed(address: str, allowed: tuple[str, ...]) -> bool:
    """Whether ``address`` is on the list: an entry equal to it, or ``@its-domain``
    (case does not matter; subdomains need entries of their own)."""
    address = address.lower()
    domain = "@" + address.rpartition("@")[2]
    return address in allowed or domain in allowed


def allowlist_entry(entry: str) -> str | None:
    """An EMAIL_ALLOWED_RECIPIENTS entry normalised (lower case), or None if it is neither
    one address nor ``@domain``."""
    entry = entry.strip().lower()
    if entry.startswith("@"):
        domain = entry[1:]
        ok = bool(domain) and "@" not in domain and not any(c in _UNSAFE for c in domain)
        return entry if ok else None
    return entry if single_address(entry) == entry else None


@dataclass(frozen=True)
class SendRates:
    """At most ``per_user`` messages per user and ``overall`` for the deployment in any
    WINDOW_S (0: no limit), counted in Redis so that every process shares the counts."""

    per_user: int
    overall: int


@dataclass(frozen=True)
class Refused:
    """A send over a rate: which one, and in how many seconds one is free again."""

    limit: int
    scope: str  # "user" or "overall"
    retry_after_s: int

    def message(self) -> str:
        whose = "per user" if self.scope == "user" else "for this server"
        return (f"at most {self.limit} e-mails per hour {whose}; "
                f"try again in {self.retry_after_s} s")


# A sliding window per key (a sorted set of job ids scored by send time, ms). A job is
# counted once whoever asks first, the web at submit or the worker at send, so jobs made
# by schedules count too and none counts twice. Checked and taken atomically.
# KEYS: the user's set, the deployment's set. ARGV: now, window, user limit, overall
# limit, job id. Returns {0, 0} if taken (or already counted), else {1 (user) or
# 2 (overall), ms until the oldest send in that set leaves the window}.
_TAKE = """
local now, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local limits = {tonumber(ARGV[3]), tonumber(ARGV[4])}
for i = 1, 2 do
  redis.call("zremrangebyscore", KEYS[i], "-inf", now - window)
end
if redis.call("zscore", KEYS[1], ARGV[5]) then return {0, 0} end
for i = 1, 2 do
  if limits[i] > 0 and redis.call("zcard", KEYS[i]) >= limits[i] then
    local oldest = redis.call("zrange", KEYS[i], 0, 0, "withscores")
    return {i, tonumber(oldest[2]) + window - now}
  end
end
for i = 1, 2 do
  redis.call("zadd", KEYS[i], now, ARGV[5])
  redis.call("pexpire", KEYS[i], window)
end
return {0, 0}
"""


def _take_args(rates: SendRates, user_key: str, overall_key: str,
               job_id: str) -> tuple[Any, ...]:
    now_ms = int(time.time() * 1000)
    return (_TAKE, 2, user_key, overall_key, now_ms, WINDOW_S * 1000, rates.per_user,
            rates.overall, job_id)


def _refusal(rates: SendRates, answer: Any) -> Refused | None:
    which, wait_ms = int(answer[0]), int(answer[1])
    if which == 0:
        return None
    limit, scope = (rates.per_user, "user") if which == 1 else (rates.overall, "overall")
    return Refused(limit, scope, max(1, -(-wait_ms // 1000)))


def take_send(client: Any, rates: SendRates, user_key: str, overall_key: str,
              job_id: str) -> Refused | None:
    """Count job ``job_id``'s message (a synchronous Redis client); Refused if over a rate."""
    if rates.per_user <= 0 and rates.overall <= 0:
        return None
    return _refusal(rates, client.eval(*_take_args(rates, user_key, overall_key, job_id)))


async def take_send_async(client: Any, rates: SendRates, user_key: str, overall_key: str,
                          job_id: str) -> Refused | None:
    """``take_send`` with an asyncio Redis client."""
    if rates.per_user <= 0 and rates.overall <= 0:
        return None
    pending: Awaitable[Any] = client.eval(*_take_args(rates, user_key, overall_key, job_id))
    return _refusal(rates, await pending)


# KEYS: the user's set, the deployment's set. ARGV: the job id.
_GIVE_BACK = """
for i = 1, 2 do redis.call("zrem", KEYS[i], ARGV[1]) end
return 0
"""


async def give_back_async(client: Any, user_key: str, overall_key: str, job_id: str) -> None:
    """Uncount job ``job_id``'s message (an asyncio Redis client): it will never be sent."""
    pending: Awaitable[Any] = client.eval(_GIVE_BACK, 2, user_key, overall_key, job_id)
    await pending
