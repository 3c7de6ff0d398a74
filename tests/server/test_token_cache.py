"""The web process's token cache: trusted for its time, bounded, and forgetful on demand."""

from __future__ import annotations

from server.core.token_cache import KnownToken, TokenCache


def _known(n: int, *, admin: bool = False) -> KnownToken:
    return KnownToken(user_id=f"user-{n}", is_admin=admin, token_id=f"token-{n}")


def test_a_token_is_trusted_for_its_time_then_read_again() -> None:
    cache = TokenCache(ttl_s=5, max_entries=10)
    cache.put("hash-1", _known(1), now=100.0, since=cache.generation)
    assert cache.get("hash-1", now=104.9) == _known(1)
    assert cache.get("hash-1", now=105.0) is None
    assert len(cache) == 0  # an expired entry goes when it is met
    assert cache.get("hash-2", now=100.0) is None


def test_it_keeps_at_most_its_entries_dropping_the_least_recently_used() -> None:
    cache = TokenCache(ttl_s=60, max_entries=3)
    for n in range(3):
        cache.put(f"hash-{n}", _known(n), now=0.0, since=cache.generation)
    assert cache.get("hash-0", now=1.0) is not None  # used: now the most recent
    cache.put("hash-3", _known(3), now=1.0, since=cache.generation)
    assert len(cache) == 3
    assert cache.get("hash-1", now=1.0) is None
    assert [cache.get(f"hash-{n}", now=1.0) is not None for n in (0, 2, 3)] == [True] * 3
    # Dropped entries leave no id behind to forget by.
    cache.forget("token-1")
    assert len(cache) == 3


def test_a_revoked_token_is_forgotten_by_its_id_and_a_gap_forgets_all() -> None:
    cache = TokenCache(ttl_s=60, max_entries=10)
    cache.put("hash-1", _known(1), now=0.0, since=cache.generation)
    cache.put("hash-2", _known(2), now=0.0, since=cache.generation)
    cache.forget("token-1")
    cache.forget("token-unknown")
    assert cache.get("hash-1", now=1.0) is None
    assert cache.get("hash-2", now=1.0) == _known(2)
    # A token read again (rights changed) replaces its entry and its id's mapping.
    cache.put("hash-2", _known(2, admin=True), now=2.0, since=cache.generation)
    assert len(cache) == 1 and cache.get("hash-2", now=3.0) == _known(2, admin=True)
    cache.clear()
    assert len(cache) == 0 and cache.get("hash-2", now=3.0) is None


def test_zero_seconds_turns_it_off() -> None:
    cache = TokenCache(ttl_s=0, max_entries=10)
    assert not cache.enabled
    cache.put("hash-1", _known(1), now=0.0, since=cache.generation)
    assert len(cache) == 0 and cache.get("hash-1", now=0.0) is None


def test_a_read_under_way_while_a_token_is_forgotten_is_not_kept() -> None:
    """A request read the row just before its token was revoked; the revocation's forget
    ran before the request put it: keeping it would let the revoked token back in."""
    cache = TokenCache(ttl_s=60, max_entries=10)
    since = cache.generation  # the read begins
    cache.forget("token-1")  # the revocation (the token was not cached: still counts)
    cache.put("hash-1", _known(1), now=0.0, since=since)  # the read ends
    assert cache.get("hash-1", now=0.0) is None
    since = cache.generation
    cache.clear()  # a gap in the bus, the same way
    cache.put("hash-1", _known(1), now=0.0, since=since)
    assert len(cache) == 0
    # A read begun after the forget is kept.
    cache.put("hash-1", _known(1), now=0.0, since=cache.generation)
    assert cache.get("hash-1", now=0.0) == _known(1)
