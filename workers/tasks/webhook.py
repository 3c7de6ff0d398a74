"""webhook.deliver: POST a JSON body to a URL, signed with the owner's webhook key.

Receivers check ``X-Darkroom-Signature: sha256=<hex>`` = HMAC-SHA256 over
``<timestamp>.<body>`` with the key ``GET /api/webhooks`` returns (derived from
WEBHOOK_SECRET and the user), and the timestamp from ``X-Darkroom-Timestamp`` (refuse
old ones to stop replays). A 5xx/429 answer or a timeout is retried with backoff; any
other 4xx, a redirect, or a private destination is final.

The destination's name is resolved once; every address it resolves to is checked, and the
connection goes to a checked address, with the name kept for the Host header, TLS SNI and
the certificate check. Resolving again to connect (as urllib does) would let a name that
answered a public address first answer 127.0.0.1 next (DNS rebinding). The whole exchange
(resolve, connect, send, status line, headers) has one deadline, WEBHOOK_DEADLINE_S.
"""

from __future__ import annotations

import concurrent.futures
import functools
import http.client
import ipaddress
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from server.core.signing import webhook_key, webhook_signature
from server.core.tasks import WEBHOOK_DELIVER
from server.data.store import JobView
from server.infra import tracing
from workers.context import WorkerContext
from workers.deadlines import Deadline
from workers.faults import TransientError
from workers.tasks.registry import TaskType, register

USER_AGENT = "Darkroom-Webhooks/1"
_DEFAULT_PORTS = {"http": 80, "https": 443}

# (host, port) -> the addresses to connect to, in order.
Resolver = Callable[[str, int], Sequence[str]]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class DeliveryRejected(Exception):
    """The delivery cannot succeed: a 4xx answer, a redirect, or a forbidden destination."""


# -- which addresses a delivery may go to (pure) ---------------------------------------------

# IANA's special-purpose registries (RFC 6890 and later) and the other ranges that are not
# one public host: a delivery may go to none of them, whatever this Python's
# ``is_global`` says (its tables changed between patch releases).
_SPECIAL_V4 = tuple(ipaddress.IPv4Network(n) for n in (
    "0.0.0.0/8",        # "this network"
    "10.0.0.0/8",       # private
    "100.64.0.0/10",    # carrier-grade NAT (shared address space)
    "127.0.0.0/8",      # loopback
    "169.254.0.0/16",   # link-local (cloud metadata services live here)
    "172.16.0.0/12",    # private
    "192.0.0.0/24",     # IETF protocol assignments
    "192.0.2.0/24",     # documentation
    "192.88.99.0/24",   # 6to4 relay anycast
    "192.168.0.0/16",   # private
    "198.18.0.0/15",    # benchmarking
    "198.51.100.0/24",  # documentation
    "203.0.113.0/24",   # documentation
    "224.0.0.0/4",      # multicast
    "240.0.0.0/4",      # reserved, and the broadcast address
))
_SPECIAL_V6 = tuple(ipaddress.IPv6Network(n) for n in (
    "::/96",            # unspecified, loopback and IPv4-compatible
    "::ffff:0:0/96",    # IPv4-mapped
    "::ffff:0:0:0/96",  # IPv4-translated
    "64:ff9b::/96",     # NAT64, well-known prefix
    "64:ff9b:1::/48",   # NAT64, local use
    "100::/64",         # discard-only
    "2001::/23",        # IETF protocol assignments, Teredo (2001::/32) among them
    "2001:db8::/32",    # documentation
    "2002::/16",        # 6to4
    "3fff::/20",        # documentation
    "5f00::/16",        # segment routing
    "fc00::/7",         # unique local
    "fe80::/10",        # link-local
    "fec0::/10",        # site-local (deprecated)
    "ff00::/8",         # multicast
))
# Only global unicast space holds public hosts; anything outside it is not one.
_GLOBAL_UNICAST_V6 = ipaddress.IPv6Network("2000::/3")
_NAT64 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("::/96"),
          ipaddress.IPv6Network("::ffff:0:0:0/96"))


def embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries: IPv4-mapped, -compatible, -translated,
    NAT64 (the last 32 bits), 6to4 (bits 16-48) and Teredo (server and client)."""
    found: list[ipaddress.IPv4Address] = []
    if address.ipv4_mapped is not None:
        found.append(address.ipv4_mapped)
    if any(address in network for network in _NAT64):
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    if address.sixtofour is not None:
        found.append(address.sixtofour)
    if address.teredo is not None:
        found.extend(address.teredo)
    return found


def is_public_address(address: str | IPAddress) -> bool:
    """Whether a delivery may go to ``address``: one globally reachable unicast host.

    Loopback, private, link-local, carrier-grade NAT, multicast, documentation and every
    other special range are not; nor are the IPv6 forms that carry an IPv4 address
    (IPv4-mapped, NAT64, 6to4, Teredo), and those are also judged by the IPv4 address
    inside, so ``::ffff:127.0.0.1`` is loopback whatever the IPv6 tables say.
    """
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    if isinstance(ip, ipaddress.IPv4Address):
        return ip.is_global and not any(ip in network for network in _SPECIAL_V4)
    if ip.scope_id:  # fe80::1%eth0: an interface of this host's
        return False
    if any(not is_public_address(inner) for inner in embedded_ipv4(ip)):
        return False
    return (ip in _GLOBAL_UNICAST_V6 and ip.is_global
            and not any(ip in network for network in _SPECIAL_V6))


# -- where a delivery goes ---------------------------------------------------------------------

def system_resolver(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (getaddrinfo), in the order given, once each."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


# getaddrinfo cannot be interrupted, and waits as long as the system resolver is set to
# (resolv.conf: timeout x attempts x servers). So it runs on a thread of its own while the
# delivery waits at most what is left of its deadline: a name server that never answers
# holds that thread (a daemon: it keeps no process from exiting) until the resolver gives
# up, never a worker's. At most _LOOKUPS such threads at once; past that a delivery waits
# for one within its deadline.
_LOOKUPS = 8
_LOOKUP_SLOTS = threading.BoundedSemaphore(_LOOKUPS)


def resolve_within(resolve: Resolver, deadline: Deadline) -> Resolver:
    """``resolve`` bounded by ``deadline``: TransientError once it passes with no answer."""

    def too_slow(host: str) -> TransientError:
        return TransientError(f"cannot resolve {host}: no answer within "
                              f"{deadline.seconds:g} s (WEBHOOK_DEADLINE_S)")

    def bounded(host: str, port: int) -> Sequence[str]:
        if not _LOOKUP_SLOTS.acquire(timeout=deadline.remaining()):
            raise too_slow(host)
        lookup: concurrent.futures.Future[Sequence[str]] = concurrent.futures.Future()

        def run() -> None:
            try:
                lookup.set_result(resolve(host, port))
            except BaseException as exc:
                lookup.set_exception(exc)
            finally:
                _LOOKUP_SLOTS.release()

        threading.Thread(target=run, name="webhook-resolve", daemon=True).start()
        done, _ = concurrent.futures.wait([lookup], timeout=deadline.remaining())
        if not done:
            raise too_slow(host)
        return lookup.result()

    return bounded


@dataclass(frozen=True)
class Destination:
    """A URL resolved once: the name it keeps (Host, SNI, certificate) and the checked
    addresses a connection may go to."""

    scheme: str
    host: str
    port: int
    target: str
    addresses: tuple[str, ...]


def resolve_destination(url: str, *, allow_private: bool,
                        resolve: Resolver = system_resolver) -> Destination:
    """Resolve the URL's host once and check every address (unless private ones are allowed).

    DeliveryRejected for a URL that is not http(s) or a host with a non-public address;
    TransientError when the name does not resolve (DNS may come back).
    """
    parts = urlsplit(url)
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise DeliveryRejected(f"not an http(s) URL: {url}")
    try:
        port = parts.port or _DEFAULT_PORTS[parts.scheme]
    except ValueError:
        raise DeliveryRejected(f"not a valid port in {url}") from None
    host = parts.hostname
    try:
        addresses = tuple(resolve(host, port))
    except (OSError, UnicodeError) as exc:
        raise TransientError(f"cannot resolve {host}: {exc}") from None
    if not addresses:
        raise TransientError(f"cannot resolve {host}: no address")
    if not allow_private:
        for address in addresses:
            if not is_public_address(address):
                raise DeliveryRejected(f"{host} is not a public address; deliveries go to "
                                       "public hosts only (WEBHOOK_ALLOW_PRIVATE)")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Destination(parts.scheme, host, port, target, addresses)


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """HTTP to one checked address; the Host header keeps the URL's name."""

    def __init__(self, destination: Destination, address: str, deadline: Deadline,
                 timeout: float) -> None:
        super().__init__(destination.host, destination.port, timeout=timeout)
        self.address = address
        self.deadline = deadline

    def _pinned_socket(self) -> socket.socket:
        sock = socket.create_connection((self.address, self.port),
                                        self.deadline.timeout(self.timeout or 0))
        try:
            self.deadline.watch(sock)
            sock.settimeout(self.deadline.timeout(self.timeout or 0))
        except BaseException:
            sock.close()
            raise
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def connect(self) -> None:
        self.sock = self._pinned_socket()


class _PinnedHTTPSConnection(_PinnedHTTPConnection):
    """HTTPS to one checked address; SNI and the certificate check use the URL's name."""

    def __init__(self, destination: Destination, address: str, deadline: Deadline,
                 timeout: float, context: ssl.SSLContext) -> None:
        super().__init__(destination, address, deadline, timeout)
        self.default_port = http.client.HTTPS_PORT
        self.context = context

    def connect(self) -> None:
        sock = self._pinned_socket()
        try:
            self.sock = self.context.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise


@functools.cache
def _default_tls() -> ssl.SSLContext:
    """The system's trusted CAs, hostname checked; made once (loading the CAs takes a while)
    and shared, as an SSLContext may be across threads."""
    return ssl.create_default_context()


def post(url: str, body: bytes, headers: dict[str, str], *, allow_private: bool,
         timeout_s: float, deadline_s: float, resolve: Resolver = system_resolver,
         tls: ssl.SSLContext | None = None) -> int:
    """POST ``body`` to ``url`` and return the answer's status.

    The name is resolved once (``resolve``), every address checked, and the connection
    made to those addresses in turn until one accepts. ``timeout_s`` bounds each socket
    operation, ``deadline_s`` the whole exchange, the name's lookup included. TransientError
    when the name does not resolve in time or the receiver cannot be reached or is too slow.
    """
    with Deadline(deadline_s) as deadline:
        destination = resolve_destination(url, allow_private=allow_private,
                                          resolve=resolve_within(resolve, deadline))
        last_error: Exception | None = None
        for address in destination.addresses:
            connection: _PinnedHTTPConnection
            try:
                if destination.scheme == "https":
                    connection = _PinnedHTTPSConnection(
                        destination, address, deadline, deadline.timeout(timeout_s),
                        tls or _default_tls())
                else:
                    connection = _PinnedHTTPConnection(destination, address, deadline,
                                                       deadline.timeout(timeout_s))
            except TimeoutError as exc:  # the deadline passed before this address's turn
                raise TransientError(f"could not reach {url}: {last_error or exc}") from None
            try:
                try:
                    connection.connect()
                except (OSError, http.client.HTTPException) as exc:
                    if deadline.expired:
                        raise TransientError(f"could not reach {url}: {_why(exc, deadline)}") \
                            from None
                    last_error = exc  # not at this address: try the next checked one
                    continue
                try:
                    connection.request("POST", destination.target, body=body, headers=headers)
                    return connection.getresponse().status
                except (OSError, http.client.HTTPException) as exc:
                    raise TransientError(f"no answer from {url}: {_why(exc, deadline)}") \
                        from None
            finally:
                connection.close()
        raise TransientError(f"could not reach {url}: {last_error}")


def _why(exc: Exception, deadline: Deadline) -> str:
    if deadline.expired:
        return (f"the exchange took longer than {deadline.seconds:g} s "
                "(WEBHOOK_DEADLINE_S)")
    return str(exc) or type(exc).__name__


def _span_attributes(payload: dict[str, Any]) -> dict[str, str | int]:
    """What the delivery's span says of it: never the URL's path or query (they may hold
    the receiver's secrets), only where it goes."""
    attributes: dict[str, str | int] = {"http.request.method": "POST",
                                        "darkroom.webhook.event": str(payload.get("event", ""))}
    try:
        parts = urlsplit(str(payload.get("url", "")))
        attributes.update({"url.scheme": parts.scheme, "server.address": parts.hostname or ""})
    except ValueError:  # a malformed URL: post() refuses it, as without tracing
        pass
    return attributes


def deliver_webhook(ctx: WorkerContext, view: JobView) -> dict[str, Any]:
    payload = view.job.payload
    settings = ctx.settings
    body = json.dumps(payload.get("body", {}), separators=(",", ":"), sort_keys=True).encode()
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-Darkroom-Event": str(payload.get("event", "")),
        "X-Darkroom-Delivery": view.job.id,
        "X-Darkroom-Timestamp": timestamp,
    }
    if settings.webhook_secret:
        key = webhook_key(settings.webhook_secret, view.job.user_id)
        headers["X-Darkroom-Signature"] = webhook_signature(key, timestamp, body)
    ctx.reporter.progress(view.job.id, "delivering", 50)
    with tracing.span("POST", kind="client",
                      attributes=_span_attributes(payload) if tracing.enabled() else None) as span:
        # A receiver that traces continues this trace (W3C traceparent); none when off.
        headers.update(tracing.carrier() or {})
        status = post(payload["url"], body, headers,
                      allow_private=settings.webhook_allow_private,
                      timeout_s=settings.webhook_timeout_s,
                      deadline_s=settings.webhook_deadline_s)
        if span is not None:
            span.set_attribute("http.response.status_code", status)
            if status >= 400:
                tracing.fail(span, f"HTTP {status}")
    if status >= 500 or status == 429:
        raise TransientError(f"the receiver answered {status}; will try again")
    if status >= 300:
        raise DeliveryRejected(f"the receiver answered {status}")
    return {"status": status}


register(TaskType.of(WEBHOOK_DELIVER, run=deliver_webhook, permanent=(DeliveryRejected,)))
