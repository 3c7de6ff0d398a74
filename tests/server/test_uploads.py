from __future__ import annotations

import pytest

from server.uploads import MAX_FILENAME_CHARS, display_filename


@pytest.mark.parametrize(("raw", "shown"), [
    ("photo.jpg", "photo.jpg"),
    ("../../etc/passwd.jpg", "passwd.jpg"),
    ("..\\..\\windows\\win.ini.jpg", "win.ini.jpg"),
    ("/etc/shadow.jpg", "shadow.jpg"),
    ("....//....//x.jpg", "x.jpg"),
    ("<img src=x onerror=alert(1)>.jpg", "<img src=x onerror=alert(1)>.jpg"),
    ("tab\there\x00.jpg", "tabhere.jpg"),
    ("", "upload"),
    ("../", "upload"),
])
def test_display_filename_is_never_a_path(raw: str, shown: str) -> None:
    assert display_filename(raw) == shown


def test_long_names_are_cut_keeping_the_extension() -> None:
    name = display_filename("é" * 400 + ".jpeg")
    assert len(name) <= MAX_FILENAME_CHARS
    assert name.endswith(".jpeg")
