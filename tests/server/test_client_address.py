"""Which address a request came from: the peer, or X-Forwarded-For as far as it is trusted."""

from __future__ import annotations

import ipaddress
import logging
from typing import Any

import pytest

from server.core import client_address as module
from server.core.client_address import (
    TrustedProxies,
    client_address,
    forwarded_by_untrusted_peer,
    forwarded_for,
    limit_key,
    limit_subject,
    parse_networks,
    parse_trusted_proxies,
    scope_address,
)
from server.infra.settings import Settings, SettingsError

NONE = TrustedProxies()
LOOPBACK = parse_networks("127.0.0.0/8, ::1")


def test_by_default_the_header_is_ignored_and_the_peer_is_the_client() -> None:
    assert client_address("203.0.113.9", "198.51.100.1", NONE) == "203.0.113.9"
    assert client_address("203.0.113.9", None, NONE) == "203.0.113.9"
    assert Settings.from_env({"SECRET_KEY": "k"}).trusted_proxies == NONE


def test_hops_take_the_nth_address_from_the_right() -> None:
    one, two = parse_trusted_proxies("1"), parse_trusted_proxies("2")
    # The client wrote "6.6.6.6" itself; the proxy appended what it saw.
    assert client_address("10.0.0.2", "6.6.6.6, 198.51.100.7", one) == "198.51.100.7"
    assert client_address("10.0.0.2", "6.6.6.6, 198.51.100.7, 10.0.0.1", two) == "198.51.100.7"
    # Fewer entries than proxies: not through all of them; the peer stays the client.
    assert client_address("10.0.0.2", "198.51.100.7", two) == "10.0.0.2"
    assert client_address("10.0.0.2", None, one) == "10.0.0.2"


def test_networks_trust_the_peer_and_each_hop_only_while_they_are_in_them() -> None:
    proxies = parse_trusted_proxies("10.0.0.0/8, 192.0.2.7")
    chain = "6.6.6.6, 198.51.100.7, 10.1.2.3"
    assert client_address("192.0.2.7", chain, proxies) == "198.51.100.7"
    # A peer that is not one of ours sent the header itself: ignored.
    assert client_address("198.51.100.99", chain, proxies) == "198.51.100.99"
    # Every hop ours: the farthest is as near the client as we know.
    assert client_address("10.0.0.1", "10.9.9.9, 10.0.0.5", proxies) == "10.9.9.9"
    assert client_address("10.0.0.1", None, proxies) == "10.0.0.1"


def test_ports_brackets_and_mapped_addresses_are_read_as_addresses() -> None:
    proxies = parse_trusted_proxies("10.0.0.0/8")
    assert client_address("10.0.0.1", "198.51.100.7:5123", proxies) == "198.51.100.7"
    assert client_address("10.0.0.1", "[2001:db8::1]:443", proxies) == "2001:db8::1"
    assert client_address("::ffff:10.0.0.1", "198.51.100.7", proxies) == "198.51.100.7"
    assert client_address("::ffff:203.0.113.9", None, NONE) == "203.0.113.9"


def test_a_hostile_value_is_kept_short() -> None:
    proxies = parse_trusted_proxies("1")
    assert len(client_address("10.0.0.1", "x" * 10_000, proxies)) == 64
    assert client_address(None, None, NONE) == ""


def test_every_header_value_counts_in_order() -> None:
    headers = [(b"x-forwarded-for", b"6.6.6.6"), (b"host", b"h"),
               (b"X-Forwarded-For", b"198.51.100.7")]
    assert forwarded_for(headers) == "6.6.6.6, 198.51.100.7"
    assert forwarded_for([(b"host", b"h")]) is None
    scope = {"client": ("10.0.0.1", 5000), "headers": headers}
    assert scope_address(scope, parse_trusted_proxies("1")) == "198.51.100.7"
    assert scope_address(scope, NONE) == "10.0.0.1"
    assert scope_address({"headers": []}, NONE) == ""


def test_an_ipv6_client_is_limited_by_its_slash_64() -> None:
    assert limit_key("2001:db8:1:2:aaaa::1") == limit_key("2001:db8:1:2:bbbb::2") \
        == "2001:db8:1:2::/64"
    assert limit_key("203.0.113.9") == "203.0.113.9"
    assert limit_key("") == "unknown"


def test_the_setting_reads_hops_or_networks_and_refuses_anything_else() -> None:
    assert parse_trusted_proxies(" ") == parse_trusted_proxies("0") == NONE
    assert parse_trusted_proxies("3") == TrustedProxies(hops=3)
    assert parse_trusted_proxies("10.0.0.0/8,::1").networks == (
        ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128"))
    assert parse_trusted_proxies("10.0.0.0/8").forwarded_allow_ips() == ["10.0.0.0/8"]
    assert TrustedProxies(hops=2).forwarded_allow_ips() == []
    for bad in ("-1", "proxy.example.com", "10.0.0.0/8, 2"):
        with pytest.raises(SettingsError, match="TRUSTED_PROXIES"):
            Settings.from_env({"SECRET_KEY": "k", "TRUSTED_PROXIES": bad})


# -- who the per-address limits leave out, and the warning when a proxy is not trusted ------


def _scope(peer: str, forwarded: str | None = None) -> dict[str, Any]:
    headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded is not None else []
    return {"client": (peer, 5000), "headers": headers}


def test_loopback_is_exempt_from_per_address_limits_by_default() -> None:
    # The limits were shared by every user behind a proxy with TRUSTED_PROXIES unset, and
    # throttled local tools and test suites making dozens of sessions from 127.0.0.1.
    assert Settings.from_env({"SECRET_KEY": "k"}).rate_limit_exempt_addresses == LOOPBACK
    for local in ("127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"):
        assert limit_subject(_scope(local), NONE, LOOPBACK) is None, local
    assert limit_subject(_scope("203.0.113.9"), NONE, LOOPBACK) == "203.0.113.9"
    assert limit_subject(_scope("2001:db8::5"), NONE, LOOPBACK) == "2001:db8::/64"
    # A proxy on this host not yet named in TRUSTED_PROXIES: its clients are not one client.
    assert limit_subject(_scope("127.0.0.1", "198.51.100.7"), NONE, LOOPBACK) is None
    # An operator may exempt nobody (RATE_LIMIT_EXEMPT_ADDRESSES=none), or other networks.
    assert limit_subject(_scope("127.0.0.1"), NONE, ()) == "127.0.0.1"
    office = parse_networks("192.0.2.0/24")
    assert limit_subject(_scope("192.0.2.40"), NONE, office) is None


def test_behind_a_trusted_proxy_the_client_counts_and_cannot_forge_loopback() -> None:
    proxy = parse_trusted_proxies("127.0.0.1")
    assert limit_subject(_scope("127.0.0.1", "198.51.100.7"), proxy, LOOPBACK) == "198.51.100.7"
    # A client writing 127.0.0.1 at the left: the proxy appended its real address after it.
    assert limit_subject(_scope("127.0.0.1", "127.0.0.1, 198.51.100.7"), proxy,
                         LOOPBACK) == "198.51.100.7"
    assert limit_subject(_scope("127.0.0.1"), proxy, LOOPBACK) is None  # a tool on the host
    hops = parse_trusted_proxies("1")
    assert limit_subject(_scope("10.0.0.2", "127.0.0.1, 198.51.100.7"), hops,
                         LOOPBACK) == "198.51.100.7"


def test_the_exempt_setting_lists_networks_or_none() -> None:
    def read(value: str) -> tuple[Any, ...]:
        return Settings.from_env({"SECRET_KEY": "k", "RATE_LIMIT_EXEMPT_ADDRESSES": value}
                                 ).rate_limit_exempt_addresses

    assert read(" ") == LOOPBACK
    assert read("none") == read("NONE") == ()
    assert read("10.0.0.0/8, 192.0.2.7") == (ipaddress.ip_network("10.0.0.0/8"),
                                             ipaddress.ip_network("192.0.2.7/32"))
    for bad in ("localhost", "10.0.0.0/8, 3"):
        with pytest.raises(SettingsError, match="RATE_LIMIT_EXEMPT_ADDRESSES"):
            read(bad)


def test_a_forwarded_header_from_an_untrusted_peer_is_warned_about_once(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(module, "_warned_untrusted", False)
    with caplog.at_level(logging.WARNING, logger="server.core.client_address"):
        limit_subject(_scope("10.0.0.5"), NONE, LOOPBACK)  # no header: nothing to say
        assert not caplog.records
        for _ in range(3):
            assert limit_subject(_scope("10.0.0.5", "198.51.100.7"), NONE, LOOPBACK) \
                == "10.0.0.5"
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    assert "TRUSTED_PROXIES" in message and "10.0.0.5" in message
    # Trusted peers are not warned about; with a hop count every peer is a proxy.
    networks = parse_trusted_proxies("10.0.0.0/8")
    assert not forwarded_by_untrusted_peer(_scope("10.0.0.5", "198.51.100.7"), networks)
    assert forwarded_by_untrusted_peer(_scope("192.0.2.1", "198.51.100.7"), networks)
    assert not forwarded_by_untrusted_peer(_scope("192.0.2.1", "198.51.100.7"),
                                           parse_trusted_proxies("2"))
    assert not forwarded_by_untrusted_peer(_scope("192.0.2.1"), NONE)
