"""Which address a request came from: the peer, or X-Forwarded-For as far as it is trusted."""

from __future__ import annotations

import ipaddress

import pytest

from server.client_address import (
    TrustedProxies,
    client_address,
    forwarded_for,
    limit_key,
    parse_trusted_proxies,
    scope_address,
)
from server.settings import Settings, SettingsError

NONE = TrustedProxies()


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
