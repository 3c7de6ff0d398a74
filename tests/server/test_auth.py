from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest

from server.core.signing import hash_token, mint_token
from server.core.token_cache import TokenCache
from server.data import store
from server.data.db import Database, async_url, sync_url
from server.web.http.auth import authenticate
from tests.conftest import Databases

pytestmark = pytest.mark.integration


@pytest.fixture
async def db(databases: Databases) -> AsyncIterator[Database]:
    database = Database(databases.new())
    await database.migrate()
    yield database
    await database.dispose()


async def test_tokens_identify_their_user(db: Database) -> None:
    token = mint_token()
    user = await db.write(store.create_user, token_hash=hash_token(token))
    principal = await authenticate(db, token, admin_token="")
    assert principal is not None and principal.user_id == user.id and not principal.is_admin
    assert await authenticate(db, "unknown", admin_token="") is None
    assert await authenticate(db, None, admin_token="") is None


async def test_admin_rights_follow_the_current_admin_token(db: Database) -> None:
    first = await authenticate(db, "old-admin-token", admin_token="old-admin-token")
    assert first is not None and first.is_admin
    # Rotated: the old token is an ordinary (known) user now, and the new one is admin.
    rotated = await authenticate(db, "old-admin-token", admin_token="new-admin-token")
    assert rotated is not None and not rotated.is_admin and rotated.user_id == first.user_id
    unset = await authenticate(db, "old-admin-token", admin_token="")
    assert unset is not None and not unset.is_admin
    new = await authenticate(db, "new-admin-token", admin_token="new-admin-token")
    assert new is not None and new.is_admin and new.user_id != first.user_id


async def test_revoked_tokens_and_admin_users(db: Database) -> None:
    token, spare = mint_token(), mint_token()
    user = await db.write(store.create_user, token_hash=hash_token(token))
    await db.write(store.create_token, user_id=user.id, token_hash=hash_token(spare))
    principal = await authenticate(db, token, admin_token="")
    assert principal is not None
    assert await db.write(store.revoke_token, token_id=principal.token_id)
    assert await authenticate(db, token, admin_token="") is None
    still = await authenticate(db, spare, admin_token="")
    assert still is not None and still.user_id == user.id and not still.is_admin
    await db.write(store.set_admin, user_id=user.id)
    promoted = await authenticate(db, spare, admin_token="")
    assert promoted is not None and promoted.is_admin and not promoted.env_token


async def test_first_uses_of_the_admin_token_at_once_make_one_user(db: Database) -> None:
    found = await asyncio.gather(*(authenticate(db, "fresh-admin", admin_token="fresh-admin")
                                   for _ in range(5)))
    assert all(p is not None and p.is_admin for p in found)
    assert len({p.user_id for p in found if p is not None}) == 1


def test_postgres_urls_of_hosting_providers_are_accepted() -> None:
    assert sync_url("postgres://u:p@db.example.com/app").startswith("postgresql+psycopg://")
    assert async_url("postgres://u:p@db.example.com/app").startswith("postgresql+psycopg://")


async def test_a_cached_token_skips_its_read_until_it_expires_or_is_forgotten(
        db: Database) -> None:
    token = mint_token()
    user = await db.write(store.create_user, token_hash=hash_token(token))
    cache = TokenCache(ttl_s=3600, max_entries=10)
    first = await authenticate(db, token, admin_token="", cache=cache)
    assert first is not None and first.user_id == user.id and len(cache) == 1
    # Revoked behind the cache's back (no event): the cache still vouches for it...
    assert await db.write(store.revoke_token, token_id=first.token_id)
    assert await authenticate(db, token, admin_token="", cache=cache) == first
    assert await authenticate(db, token, admin_token="") is None
    # ...until it is told (session:revoked), and then the database says no.
    cache.forget(first.token_id)
    assert await authenticate(db, token, admin_token="", cache=cache) is None
    assert len(cache) == 0  # an unknown token is not kept
    # Expiry: an entry older than its time is read again.
    other = mint_token()
    await db.write(store.create_user, token_hash=hash_token(other))
    short = TokenCache(ttl_s=1, max_entries=10)
    known = await authenticate(db, other, admin_token="", cache=short)
    assert known is not None
    assert await db.write(store.revoke_token, token_id=known.token_id)
    await asyncio.sleep(1.05)
    assert await authenticate(db, other, admin_token="", cache=short) is None


async def test_admin_rights_of_a_cached_token_follow_the_current_admin_token(
        db: Database) -> None:
    cache = TokenCache(ttl_s=3600, max_entries=10)
    first = await authenticate(db, "old-admin-token", admin_token="old-admin-token",
                               cache=cache)
    assert first is not None and first.is_admin and first.env_token
    rotated = await authenticate(db, "old-admin-token", admin_token="new-admin-token",
                                 cache=cache)
    assert rotated is not None and not rotated.is_admin and not rotated.env_token
    assert rotated.user_id == first.user_id


class _ReplyHeld:
    """The real database, but a token's read returns only once ``release`` is set: a
    request whose read is in flight while the token is revoked."""

    def __init__(self, db: Database) -> None:
        self.db, self.read_done, self.release = db, asyncio.Event(), asyncio.Event()

    async def read(self, fn: Any, /, **kwargs: Any) -> Any:
        result = await self.db.read(fn, **kwargs)
        self.read_done.set()
        await self.release.wait()
        return result

    async def write(self, fn: Any, /, **kwargs: Any) -> Any:
        return await self.db.write(fn, **kwargs)


async def test_a_read_in_flight_as_its_token_is_revoked_does_not_cache_it(
        db: Database) -> None:
    token = mint_token()
    await db.write(store.create_user, token_hash=hash_token(token))
    cache = TokenCache(ttl_s=3600, max_entries=10)
    held = _ReplyHeld(db)
    in_flight = asyncio.create_task(authenticate(cast(Database, held), token, "", cache))
    await held.read_done.wait()  # its read saw the token
    found = await db.read(store.user_by_token_hash, token_hash=hash_token(token))
    assert found is not None
    assert await db.write(store.revoke_token, token_id=found[1].id)  # DELETE /api/session
    cache.forget(found[1].id)  # ...and its forget (or session:revoked in another process)
    held.release.set()
    assert await in_flight is not None  # already past its check, as before the cache
    assert await authenticate(db, token, "", cache) is None
    assert len(cache) == 0
