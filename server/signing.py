"""Signed, expiring URLs for image files, so a plain <img src> works without headers (pure)."""

from __future__ import annotations

import hashlib
import hmac
import math

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
    return hmac.compare_digest(_signature(secret, image_id, kind, expires), signature)
