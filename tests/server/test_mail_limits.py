"""Who e-mail may go to: one bare address, on the operator's list (pure)."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.core.mail_limits import Refused, allowlist_entry, recipient_allowed, single_address
from server.infra.settings import Settings, SettingsError


@pytest.mark.parametrize("value", ["ana@example.com", "a.b+tag@sub.example.org"])
def test_one_bare_address_passes(value: str) -> None:
    assert single_address(value) == value


@pytest.mark.parametrize("value", [
    "victim@ex.com,postmaster",          # two recipients
    "victim@ex.com, other@ex.com",
    "victim@ex.com;other@ex.com",
    "Ana <ana@example.com>",             # a display name
    "ana@example.com (comment)",
    "<ana@example.com>",
    "ana@example.com\r\nBcc: x@ex.com",  # header injection
    "ana@@example.com", "ana", "@example.com", "ana@", "", " ana@example.com",
    "a\"b@example.com", "alice@example.org)<bob@example.org>",
])
def test_anything_but_one_bare_address_is_refused(value: str) -> None:
    assert single_address(value) is None


def test_the_allowlist_takes_addresses_and_whole_domains() -> None:
    allowed = ("ops@example.com", "@customer.example")
    assert recipient_allowed("ops@example.com", allowed)
    assert recipient_allowed("OPS@Example.com", allowed)
    assert recipient_allowed("anyone@customer.example", allowed)
    assert not recipient_allowed("dev@example.com", allowed)
    assert not recipient_allowed("x@sub.customer.example", allowed)
    assert not recipient_allowed("x@customer.example.evil", allowed)
    assert not recipient_allowed("ops@example.com", ())


def test_allowlist_entries_are_checked_when_settings_are_read(tmp_path: Path) -> None:
    base = {"DATA_DIR": str(tmp_path), "SECRET_KEY": "k"}
    assert allowlist_entry(" @Example.COM ") == "@example.com"
    assert allowlist_entry("Ops@Example.com") == "ops@example.com"
    assert allowlist_entry("a@x.com,b@y.com") is None
    assert allowlist_entry("@") is None
    settings = Settings.from_env(
        {**base, "EMAIL_ALLOWED_RECIPIENTS": "ops@example.com, @Team.example,"})
    assert settings.email_allowed_recipients == ("ops@example.com", "@team.example")
    assert Settings.from_env(base).email_allowed_recipients == ()
    with pytest.raises(SettingsError, match="EMAIL_ALLOWED_RECIPIENTS"):
        Settings.from_env({**base, "EMAIL_ALLOWED_RECIPIENTS": "ops@example.com, postmaster"})


def test_a_refusal_says_which_rate_and_when() -> None:
    assert Refused(20, "user", 61).message() == \
        "at most 20 e-mails per hour per user; try again in 61 s"
    assert "for this server" in Refused(200, "overall", 5).message()
