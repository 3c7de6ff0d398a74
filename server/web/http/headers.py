"""Security headers and download names (pure: strings in, strings out)."""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import quote, urlsplit

NOSNIFF = ("X-Content-Type-Options", "nosniff")


def origin_of(url: str) -> str | None:
    """``scheme://host[:port]`` of an absolute http(s) URL, else None."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}"


def content_security_policy(public_url: str = "") -> str:
    """The policy of every HTML page: only the app's own scripts, styles and connections.

    The pages load their scripts and stylesheets from /static, set no inline styles or
    handlers, talk to their own origin (fetch and the Socket.IO WebSocket: CSP 3 lets
    'self' match ws/wss of the same host) and show images from signed URLs, which are
    absolute on PUBLIC_URL when that is set. ``data:`` images are the icons of the API
    reference at /docs (Swagger UI inlines them); an image cannot run script.
    """
    images = ["'self'", "data:"]
    public = origin_of(public_url) if public_url else None
    if public:
        images.append(public)
    directives = [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        f"img-src {' '.join(images)}",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
    return "; ".join(directives)


def page_headers(public_url: str = "") -> dict[str, str]:
    """Headers every HTML response gets."""
    return {
        "Content-Security-Policy": content_security_policy(public_url),
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
    }


_UNSAFE_IN_QUOTES = re.compile(r'["\\\x00-\x1f\x7f]')


def content_disposition(filename: str) -> str:
    """``attachment; filename="<ascii>"; filename*=UTF-8''<percent-encoded>`` (RFC 6266).

    The plain ``filename`` is an ASCII fallback for old clients; every current browser
    uses ``filename*``. Path separators and control characters never survive.
    """
    name = re.split(r"[\\/]", filename)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C").strip() or "download"
    fallback = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    fallback = _UNSAFE_IN_QUOTES.sub("_", fallback).strip()
    if not fallback or fallback.startswith("."):
        fallback = "download" + fallback
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"
