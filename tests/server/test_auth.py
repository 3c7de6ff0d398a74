from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from server import store
from server.auth import authenticate, hash_token, mint_token
from server.db import Database


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'auth.db'}")
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
