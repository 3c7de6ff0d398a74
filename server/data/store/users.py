"""Users and their bearer tokens (stored as hashes)."""

from __future__ import annotations

from sqlalchemy import delete, exists, or_, select
from sqlalchemy.orm import Session

from server.data.models import Token, User, new_id, utcnow


def create_user(s: Session, /, *, token_hash: str, is_admin: bool = False,
                label: str = "") -> User:
    """A new user with one token (its hash)."""
    user = User(id=new_id(), is_admin=is_admin, created_at=utcnow())
    s.add(user)
    s.flush()
    create_token(s, user_id=user.id, token_hash=token_hash, label=label)
    return user


def create_token(s: Session, /, *, user_id: str, token_hash: str, label: str = "") -> Token:
    """Another token for an existing user."""
    token = Token(id=new_id(), user_id=user_id, token_hash=token_hash, label=label,
                  created_at=utcnow())
    s.add(token)
    s.flush()
    return token


def user_by_token_hash(s: Session, /, *, token_hash: str) -> tuple[User, Token] | None:
    """The user a token belongs to, and the token; None for an unknown or revoked one."""
    row = s.execute(select(User, Token).join(Token, Token.user_id == User.id)
                    .where(Token.token_hash == token_hash)).first()
    return (row[0], row[1]) if row else None


def ensure_user(s: Session, /, *, token_hash: str) -> tuple[User, Token]:
    """The user behind a token, created on first use (the ADMIN_TOKEN's user)."""
    found = user_by_token_hash(s, token_hash=token_hash)
    if found is not None:
        return found
    user = create_user(s, token_hash=token_hash, label="ADMIN_TOKEN")
    found = user_by_token_hash(s, token_hash=token_hash)
    assert found is not None and found[0] is user
    return found


def revoke_token(s: Session, /, *, token_id: str) -> bool:
    """Delete one token; its bearer is unknown from now on. False if it was gone already."""
    result = s.execute(delete(Token).where(Token.id == token_id))
    return bool(getattr(result, "rowcount", 0))


def existing_token_ids(s: Session, /, *, token_ids: set[str]) -> set[str]:
    """Those of ``token_ids`` that are not revoked."""
    if not token_ids:
        return set()
    return set(s.scalars(select(Token.id).where(Token.id.in_(token_ids))))


def user_is_admin(s: Session, /, *, user_id: str, admin_token_hash: str | None) -> bool:
    """Whether the user has admin rights now: marked admin, or the ADMIN_TOKEN's user
    (one of their tokens hashes to ``admin_token_hash``, the hash of ADMIN_TOKEN as it is
    set now; None when it is unset). One indexed query, for workers that know no token."""
    holds_admin_token = [] if admin_token_hash is None else [
        exists().where(Token.user_id == User.id, Token.token_hash == admin_token_hash)]
    return bool(s.scalar(select(or_(User.is_admin, *holds_admin_token))
                         .where(User.id == user_id)))


def set_admin(s: Session, /, *, user_id: str) -> User | None:
    """Make an existing user an admin; None if there is no such user."""
    user = s.get(User, user_id)
    if user is not None:
        user.is_admin = True
    return user
