"""Which address a request came from, given the proxies in front of us (pure).

``X-Forwarded-For`` is a list each proxy appends its peer's address to, so only its
right end is trustworthy: a client writes whatever it likes at the left. TRUSTED_PROXIES
says how far from the right to believe it:

- empty or ``0`` (the default): no proxy is trusted; the peer address is the client's.
- a number N: the server is reachable only through N proxies, the nearest being the
  peer; the client is the N-th address from the right (as werkzeug's ProxyFix
  ``x_for=N``). A request that passed fewer proxies keeps its peer address.
- addresses and CIDR networks (``10.0.0.0/8, 192.0.2.7``): a peer in them is a proxy, and
  so is each address read from the right while it is in them; the first one that is not
  is the client's (as uvicorn's ``forwarded_allow_ips``). Safe even when the server can
  also be reached directly: then the peer is not trusted and the header is ignored.

Per-address limits (new sessions, engine.io handshakes) count by the client address so
found, except for RATE_LIMIT_EXEMPT_ADDRESSES (loopback by default): local tools, and a
proxy on this host while TRUSTED_PROXIES is unset, are not throttled as one client.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

log = logging.getLogger(__name__)

# An address is a key in Redis and a log field: a hostile header must not make it long.
_MAX_LENGTH = 64
# A client behind IPv6 usually holds a whole /64: counting per address would give one
# client 2**64 allowances.
_IPV6_PREFIX = 64


@dataclass(frozen=True)
class TrustedProxies:
    """TRUSTED_PROXIES, parsed: a number of hops, or the proxies' networks (not both)."""

    hops: int = 0
    networks: tuple[Network, ...] = ()

    def forwarded_allow_ips(self) -> list[str]:
        """uvicorn's ``forwarded_allow_ips`` for the same trust (it knows no hop counts;
        with hops, our own reading of the header is the only one): the client address and
        scheme it sets then agree with ``client_address``, which finds the same again."""
        return [str(net) for net in self.networks]


def parse_trusted_proxies(raw: str) -> TrustedProxies:
    """``""``/``"0"`` → none, ``"2"`` → two hops, ``"10.0.0.0/8, ::1"`` → those networks;
    ValueError for anything else."""
    text = raw.strip()
    if not text:
        return TrustedProxies()
    if text.isdigit():
        return TrustedProxies(hops=int(text))
    try:
        return TrustedProxies(networks=parse_networks(text))
    except ValueError as exc:
        raise ValueError(f"not a number of hops, {exc}") from None


def parse_networks(raw: str) -> tuple[Network, ...]:
    """``"10.0.0.0/8, ::1"`` → those networks (an address is a network of one);
    ValueError for a part that is neither."""
    networks = []
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        try:
            networks.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ValueError(f"an address or a CIDR network: {part!r}") from None
    return tuple(networks)


def _parse(text: str) -> Address | None:
    """An address as a proxy writes it: bare, ``v4:port`` or ``[v6]:port``; None if not."""
    value = text.strip().strip('"')
    if value.startswith("["):
        value = value[1:].partition("]")[0]
    elif value.count(":") == 1:
        value = value.partition(":")[0]
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _shown(text: str) -> str:
    address = _parse(text)
    return str(address) if address is not None else text.strip()[:_MAX_LENGTH]


def _trusted(text: str, networks: tuple[Network, ...]) -> bool:
    address = _parse(text)
    return address is not None and any(address in net for net in networks)


def client_address(peer: str | None, forwarded_for: str | None,
                   trusted: TrustedProxies) -> str:
    """The client's address: the peer's, or one read from X-Forwarded-For (all of its
    values joined by commas) as far as ``trusted`` allows; ``""`` when nothing is known."""
    peer_text = _shown(peer or "")
    entries = [e.strip() for e in (forwarded_for or "").split(",") if e.strip()]
    if trusted.hops:
        return _shown(entries[-trusted.hops]) if len(entries) >= trusted.hops else peer_text
    if not trusted.networks or not _trusted(peer_text, trusted.networks):
        return peer_text
    for entry in reversed(entries):
        if not _trusted(entry, trusted.networks):
            return _shown(entry)
    # Every hop is a proxy of ours: the farthest one is as near the client as we know.
    return _shown(entries[0]) if entries else peer_text


def forwarded_for(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """Every X-Forwarded-For value of raw ASGI headers, joined in order (None if none)."""
    values = [value.decode("latin-1") for name, value in headers
              if name.lower() == b"x-forwarded-for"]
    return ", ".join(values) if values else None


def scope_address(scope: Mapping[str, Any], trusted: TrustedProxies) -> str:
    """The client address of an ASGI connection (HTTP or WebSocket; engine.io hands its
    ``environ["asgi.scope"]``)."""
    client = scope.get("client")
    peer = str(client[0]) if client else None
    return client_address(peer, forwarded_for(scope.get("headers") or ()), trusted)


def limit_key(address: str) -> str:
    """What a per-address limit counts by: the address, or its /64 for IPv6."""
    parsed = _parse(address)
    if isinstance(parsed, ipaddress.IPv6Address):
        return str(ipaddress.ip_network(f"{parsed}/{_IPV6_PREFIX}", strict=False))
    return str(parsed) if parsed is not None else (address[:_MAX_LENGTH] or "unknown")


def forwarded_by_untrusted_peer(scope: Mapping[str, Any], trusted: TrustedProxies) -> bool:
    """Whether the connection carries X-Forwarded-For from a peer that TRUSTED_PROXIES does
    not trust, so that the header is ignored (with a hop count every peer is trusted)."""
    if trusted.hops or forwarded_for(scope.get("headers") or ()) is None:
        return False
    client = scope.get("client")
    return not _trusted(str(client[0]) if client else "", trusted.networks)


def is_exempt(address: str, exempt: tuple[Network, ...]) -> bool:
    """Whether a client address is in RATE_LIMIT_EXEMPT_ADDRESSES."""
    return _trusted(address, exempt)


_warned_untrusted = False


def limit_subject(scope: Mapping[str, Any], trusted: TrustedProxies,
                  exempt: tuple[Network, ...]) -> str | None:
    """What a per-address limit counts this connection as (``limit_key`` of its client
    address), or None when that address is exempt (RATE_LIMIT_EXEMPT_ADDRESSES).

    The first time in this process that X-Forwarded-For comes from a peer TRUSTED_PROXIES
    does not trust, a warning says to set it: behind a proxy every client would otherwise
    count as the proxy (and, for a proxy on this host, be exempt)."""
    global _warned_untrusted
    if not _warned_untrusted and forwarded_by_untrusted_peer(scope, trusted):
        _warned_untrusted = True
        client = scope.get("client")
        log.warning("X-Forwarded-For from %s is ignored: TRUSTED_PROXIES does not name it, so "
                    "per-address limits count it as the client. Behind a proxy or load "
                    "balancer, set TRUSTED_PROXIES to its addresses (or how many proxies "
                    "there are) so that each client is counted apart (logged once)",
                    _shown(str(client[0]) if client else ""))
    address = scope_address(scope, trusted)
    return None if is_exempt(address, exempt) else limit_key(address)
