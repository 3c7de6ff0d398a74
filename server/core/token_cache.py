"""Who recently checked bearer tokens belong to, kept for a few seconds per web process.

Every authenticated request used to read its token's row: a thread hop and a query on
the hot path of every upload and poll. A web process now trusts what it read for
AUTH_CACHE_S. Only known tokens are kept (an unknown one is read again each time, so
made-up tokens cannot fill the cache), at most AUTH_CACHE_ENTRIES of them (the least
recently used go first). A revocation removes its token: the process that revokes does
so at once, the others when their relay brings ``session:revoked`` (milliseconds), and a
process that lost the bus for a while forgets everything. A read that was under way
while a token was forgotten is not kept (``generation``), so a revoked token cannot come
back. A change the bus does not carry (a lost event, a token revoked in the database by
hand, ``darkroom admin`` granting rights) applies within AUTH_CACHE_S. Pure: the caller
says what time it is.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class KnownToken:
    """A token's row as the database had it: whose it is and whether they are an admin."""

    user_id: str
    is_admin: bool
    token_id: str


class TokenCache:
    """Token hash → ``KnownToken``, each entry trusted for ``ttl_s`` seconds."""

    def __init__(self, ttl_s: float, max_entries: int) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[KnownToken, float]] = OrderedDict()
        self._hashes: dict[str, str] = {}  # token id → its hash, to forget by id
        # Counts forgets and clears: a row read before one of them may be stale.
        self.generation = 0

    @property
    def enabled(self) -> bool:
        return self.ttl_s > 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, token_hash: str, now: float) -> KnownToken | None:
        """The token's row if it was read less than ``ttl_s`` ago."""
        entry = self._entries.get(token_hash)
        if entry is None:
            return None
        known, expires = entry
        if now >= expires:
            self._drop(token_hash)
            return None
        self._entries.move_to_end(token_hash)
        return known

    def put(self, token_hash: str, known: KnownToken, now: float, *, since: int) -> None:
        """Keep a row read when ``generation`` was ``since``; not kept when a token was
        forgotten meanwhile (the read may predate its revocation), or the cache is off."""
        if not self.enabled or since != self.generation:
            return
        self._drop(token_hash)
        self._entries[token_hash] = (known, now + self.ttl_s)
        self._hashes[known.token_id] = token_hash
        while len(self._entries) > self.max_entries:
            self._drop(next(iter(self._entries)))

    def forget(self, token_id: str) -> None:
        """A revoked token: the next request with it reads the database (and gets a 401)."""
        self.generation += 1
        token_hash = self._hashes.get(token_id)
        if token_hash is not None:
            self._drop(token_hash)

    def clear(self) -> None:
        """Forget every token (after a gap in the bus: revocations may have been missed)."""
        self.generation += 1
        self._entries.clear()
        self._hashes.clear()

    def _drop(self, token_hash: str) -> None:
        entry = self._entries.pop(token_hash, None)
        if entry is not None:
            self._hashes.pop(entry[0].token_id, None)
