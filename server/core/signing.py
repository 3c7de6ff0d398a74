"""Signed, expiring URLs for image files, so a plain <img src> works without headers (pure)."""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets

FILE_KINDS = ("thumbnail", "preview", "original")


def _signature(secret: str, image_id: str, kind: str, expires: int) -> str:
    msg = f"{image_id}:{kind}:{expires}".encode()
    return hmac.new(secret.encode(), msg, hashlib.sha256).hexdigest()[:32]


def sign(secret: str, image_id: str, kind: str, *, now: float, ttl_s: int) -> tuple[int, str]:
    """(expires, signature) for one file; expiry rounds up to the hour so URLs stay cacheable."""
    expires = int(math.ceil((now + ttl_s) / 3600) * 3600)
    return expires, _signature(secret, image_id, kind, expires)


def verify(secret: str, image_id: str, kind: str, *, expires: int, signature: str,
           now: float) -> bool:
    """Whether ``signature`` is ours for this file and has not expired."""
    if expires < now:
        return False
    # compare_digest refuses str with non-ASCII characters (TypeError); ours never has them.
    return hmac.compare_digest(_signature(secret, image_id, kind, expires).encode(),
                               signature.encode("utf-8", "surrogatepass"))


def webhook_key(secret: str, user_id: str) -> str:
    """The key a user's webhook deliveries are signed with (derived from WEBHOOK_SECRET).

    One key per user: a delivery signed with it can only have come from that user's
    jobs, so nobody can send another user's receiver a correctly signed fake.
    """
    return hmac.new(secret.encode(), f"webhook:{user_id}".encode(), hashlib.sha256).hexdigest()


def webhook_signature(key: str, timestamp: str, body: bytes) -> str:
    """The value of X-Darkroom-Signature for a body sent at ``timestamp``."""
    digest = hmac.new(key.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={digest.hexdigest()}"


def mint_token() -> str:
    """A new opaque bearer token (256 bits)."""
    return secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """What is stored of a bearer token: its SHA-256 (the token itself never is)."""
    return hashlib.sha256(token.encode()).hexdigest()
