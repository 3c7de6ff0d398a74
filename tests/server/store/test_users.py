"""Users and their tokens (``store.users``).

On SQLite, and on PostgreSQL too when TEST_DATABASE_URL is set (``conftest``)."""

from __future__ import annotations

import secrets

import pytest
from sqlalchemy.exc import IntegrityError

from server.data import store
from server.data.db import SyncDatabase
from server.data.models import Token, User, new_id
from tests.server.store.rows import count_rows, new_user


def test_users_and_their_tokens_resolve_by_hash(db: SyncDatabase) -> None:
    """create_user stores a user with one token; create_token adds another; both resolve."""
    first, second = secrets.token_hex(32), secrets.token_hex(32)
    user = db.write(store.create_user, token_hash=first, label="cli")
    admin = db.write(store.create_user, token_hash=secrets.token_hex(32), is_admin=True)
    extra = db.write(store.create_token, user_id=user.id, token_hash=second, label="laptop")

    found = db.read(store.user_by_token_hash, token_hash=first)
    assert found is not None
    assert found[0].id == user.id and not found[0].is_admin
    assert found[1].label == "cli" and found[1].user_id == user.id
    again = db.read(store.user_by_token_hash, token_hash=second)
    assert again is not None and again[0].id == user.id
    assert again[1].id == extra.id != found[1].id and again[1].label == "laptop"
    assert db.read(lambda s: s.get(User, admin.id)).is_admin
    assert db.read(store.user_by_token_hash, token_hash=secrets.token_hex(32)) is None


def test_a_token_hash_belongs_to_one_user_only(db: SyncDatabase) -> None:
    """The unique index refuses a second user on the same hash; nothing of it is stored."""
    token_hash = secrets.token_hex(32)
    db.write(store.create_user, token_hash=token_hash)
    before = count_rows(db, User)
    with pytest.raises(IntegrityError):
        db.write(store.create_user, token_hash=token_hash)
    assert count_rows(db, User) == before
    assert count_rows(db, Token, Token.token_hash == token_hash) == 1


def test_ensure_user_creates_the_user_once(db: SyncDatabase) -> None:
    """The first call makes the user (token labelled ADMIN_TOKEN); later calls find it."""
    token_hash = secrets.token_hex(32)
    user, token = db.write(store.ensure_user, token_hash=token_hash)
    assert token.label == "ADMIN_TOKEN" and token.user_id == user.id
    user_again, token_again = db.write(store.ensure_user, token_hash=token_hash)
    assert (user_again.id, token_again.id) == (user.id, token.id)
    assert count_rows(db, Token, Token.token_hash == token_hash) == 1
    assert count_rows(db, User, User.id == user.id) == 1


def test_revoke_token_forgets_that_token_only(db: SyncDatabase) -> None:
    """Revoked: unknown from now on, the user's other tokens still work; twice is False."""
    first, second = secrets.token_hex(32), secrets.token_hex(32)
    user = db.write(store.create_user, token_hash=first)
    db.write(store.create_token, user_id=user.id, token_hash=second)
    found = db.read(store.user_by_token_hash, token_hash=first)
    assert found is not None
    assert db.write(store.revoke_token, token_id=found[1].id) is True
    assert db.read(store.user_by_token_hash, token_hash=first) is None
    still = db.read(store.user_by_token_hash, token_hash=second)
    assert still is not None and still[0].id == user.id
    assert db.write(store.revoke_token, token_id=found[1].id) is False


def test_existing_token_ids_drops_revoked_and_unknown_ids(db: SyncDatabase) -> None:
    """Only ids of tokens that still exist come back; an empty question is answered empty."""
    user = db.write(store.create_user, token_hash=secrets.token_hex(32))
    kept = db.write(store.create_token, user_id=user.id, token_hash=secrets.token_hex(32))
    gone = db.write(store.create_token, user_id=user.id, token_hash=secrets.token_hex(32))
    db.write(store.revoke_token, token_id=gone.id)
    assert db.read(store.existing_token_ids, token_ids={kept.id, gone.id, new_id()}) == {
        kept.id}
    assert db.read(store.existing_token_ids, token_ids=set()) == set()


def test_set_admin_promotes_an_existing_user_only(db: SyncDatabase) -> None:
    """The flag is stored; an unknown id gives None."""
    user_id = new_user(db)
    promoted = db.write(store.set_admin, user_id=user_id)
    assert promoted is not None and promoted.id == user_id
    assert db.read(lambda s: s.get(User, user_id)).is_admin is True
    assert db.write(store.set_admin, user_id=new_id()) is None


def test_user_is_admin_when_marked_or_holding_the_admin_token(db: SyncDatabase) -> None:
    """Marked admin, or a token of theirs hashes to ADMIN_TOKEN's hash as set now."""
    plain, marked, admin_hash = new_user(db), new_user(db), secrets.token_hex(32)
    db.write(store.set_admin, user_id=marked)
    held = db.write(store.create_user, token_hash=admin_hash, label="ADMIN_TOKEN").id

    def admin(user_id: str, token_hash: str | None = admin_hash) -> bool:
        return db.read(store.user_is_admin, user_id=user_id, admin_token_hash=token_hash)

    assert (admin(plain), admin(marked), admin(held)) == (False, True, True)
    assert admin(held, secrets.token_hex(32)) is False  # ADMIN_TOKEN rotated
    assert admin(held, None) is False  # ADMIN_TOKEN unset
    assert admin(new_id()) is False
