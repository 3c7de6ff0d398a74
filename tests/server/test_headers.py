from __future__ import annotations

from urllib.parse import unquote

import pytest

from server.web.http.headers import content_disposition, content_security_policy, page_headers


def _directives(policy: str) -> dict[str, str]:
    return {d.split(" ", 1)[0]: d.split(" ", 1)[1] for d in policy.split("; ")}


def test_the_page_policy_allows_only_our_own_scripts() -> None:
    policy = _directives(content_security_policy())
    assert policy["script-src"] == "'self'"
    assert policy["default-src"] == "'self'"
    assert policy["object-src"] == "'none'"
    assert policy["base-uri"] == "'none'"
    assert policy["frame-ancestors"] == "'none'"
    assert "unsafe" not in content_security_policy()
    assert page_headers()["X-Frame-Options"] == "DENY"


def test_images_may_come_from_the_public_url() -> None:
    policy = _directives(content_security_policy("https://img.example.com/base"))
    assert policy["img-src"] == "'self' data: https://img.example.com"
    assert policy["script-src"] == "'self'"


@pytest.mark.parametrize(("name", "ascii_name"), [
    ("photo.jpg", "photo.jpg"),
    ("Ürlaub 2024.jpg", "Urlaub 2024.jpg"),
    ('say "cheese".png', "say _cheese_.png"),
    ("C:\\Users\\me\\shot.png", "shot.png"),
    ("写真.jpg", "download.jpg"),
    ("../../etc/passwd", "passwd"),
    ("a\r\nSet-Cookie: x=1.jpg", "aSet-Cookie: x=1.jpg"),
    ("", "download"),
])
def test_download_names_are_safe(name: str, ascii_name: str) -> None:
    header = content_disposition(name)
    assert header.startswith("attachment; filename=\"")
    fallback = header.split('filename="', 1)[1].split('"', 1)[0]
    assert fallback == ascii_name
    encoded = header.split("filename*=UTF-8''", 1)[1]
    assert all(c.isalnum() or c in "%-._~" for c in encoded), encoded
    assert "/" not in unquote(encoded) and "\n" not in header and "\r" not in header
