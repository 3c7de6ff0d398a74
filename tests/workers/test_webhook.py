"""webhook.deliver's network side: which addresses it may reach, that it connects to the
address it checked (never resolving the name a second time), and its overall deadline.

Receivers are local servers on threads (no process): the name a test delivers to is made
to resolve to them, through the injectable resolver or through ``socket.getaddrinfo``.
"""

from __future__ import annotations

import contextlib
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import IPv6Address
from typing import Any

import pytest
import trustme

from workers.faults import TransientError
from workers.tasks import registry as tasks
from workers.tasks.webhook import (
    DeliveryRejected,
    embedded_ipv4,
    is_public_address,
    post,
    resolve_destination,
)

PUBLIC = "93.184.215.14"  # a public address no test ever connects to

NOT_PUBLIC = [
    # IPv4 special ranges
    "0.0.0.0", "10.1.2.3", "100.64.0.1", "100.127.255.254", "127.0.0.1", "127.255.0.9",
    "169.254.169.254", "172.16.0.1", "172.31.255.255", "192.0.0.8", "192.0.2.10",
    "192.88.99.1", "192.168.1.1", "198.18.0.1", "198.51.100.7", "203.0.113.9",
    "224.0.0.1", "239.255.255.250", "240.0.0.1", "255.255.255.255",
    # IPv6 special ranges
    "::", "::1", "fe80::1", "fe80::1%1", "fc00::1", "fd12:3456::1", "fec0::1", "ff02::1",
    "100::1", "2001:db8::1", "3fff::1", "5f00::1", "2001:2::1", "1234::1",
    # IPv4 inside IPv6: private ones, and these forms even around a public one
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:8.8.8.8", "::127.0.0.1", "::8.8.8.8",
    "::ffff:0:127.0.0.1", "64:ff9b::7f00:1", "64:ff9b::808:808", "64:ff9b:1::a00:1",
    "2002:7f00:1::1", "2002:808:808::1", "2001:0:4136:e378:8000:63bf:3fff:fdd2",
    "2001::1",
]
PUBLIC_ADDRESSES = ["8.8.8.8", "1.1.1.1", PUBLIC, "100.63.255.255", "100.128.0.1",
                    "172.32.0.1", "192.0.1.1", "2606:4700:4700::1111", "2001:4860:4860::8888",
                    "2a00:1450:4001:82a::200e"]


@pytest.mark.parametrize("address", NOT_PUBLIC)
def test_special_addresses_are_not_public(address: str) -> None:
    assert not is_public_address(address)


@pytest.mark.parametrize("address", PUBLIC_ADDRESSES)
def test_public_addresses_are(address: str) -> None:
    assert is_public_address(address)


def test_the_ipv4_inside_an_ipv6_address_is_found() -> None:
    assert [str(a) for a in embedded_ipv4(IPv6Address("::ffff:127.0.0.1"))] == ["127.0.0.1"]
    assert [str(a) for a in embedded_ipv4(IPv6Address("64:ff9b::a00:1"))] == ["10.0.0.1"]
    assert [str(a) for a in embedded_ipv4(IPv6Address("2002:c0a8:101::1"))] == ["192.168.1.1"]
    teredo = IPv6Address("2001:0:4136:e378:8000:63bf:3fff:fdd2")  # RFC 4380's example
    assert {str(a) for a in embedded_ipv4(teredo)} == {"65.54.227.120", "192.0.2.45"}
    assert embedded_ipv4(IPv6Address("2606:4700:4700::1111")) == []


def test_one_private_address_among_public_ones_refuses_the_host() -> None:
    with pytest.raises(DeliveryRejected, match="not a public address"):
        resolve_destination("https://mixed.example/x", allow_private=False,
                            resolve=lambda host, port: [PUBLIC, "::ffff:169.254.169.254"])


def test_urls_and_names_that_cannot_be_delivered_to() -> None:
    with pytest.raises(DeliveryRejected):
        resolve_destination("ftp://x.example/", allow_private=False)
    with pytest.raises(TransientError, match="cannot resolve"):
        resolve_destination("https://x.example/", allow_private=False,
                            resolve=lambda host, port: [])


@dataclass
class Received:
    """What a local receiver got: each request's Host header and path."""

    requests: list[tuple[str, str]] = field(default_factory=list)


@pytest.fixture
def receiver() -> Iterator[tuple[int, Received]]:
    """An HTTP server on 127.0.0.1 that answers 204 and records each request."""
    seen = Received()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            seen.requests.append((self.headers.get("Host", ""), self.path))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        yield server.server_address[1], seen
    finally:
        server.shutdown()
        server.server_close()


def _post(url: str, **options: Any) -> int:
    settings: dict[str, Any] = {"allow_private": False, "timeout_s": 5, "deadline_s": 5}
    return post(url, b"{}", {"Content-Type": "application/json"}, **{**settings, **options})


def test_connects_to_the_address_it_resolved_once_and_keeps_the_name(
        receiver: tuple[int, Received]) -> None:
    port, seen = receiver
    asked: list[tuple[str, int]] = []

    def resolve(host: str, port: int) -> list[str]:
        asked.append((host, port))
        return ["127.0.0.1"]

    status = _post(f"http://hooks.example:{port}/in?x=1", resolve=resolve, allow_private=True)
    assert status == 204
    assert asked == [("hooks.example", port)]
    assert seen.requests == [(f"hooks.example:{port}", "/in?x=1")]


def test_the_next_checked_address_is_tried_when_one_refuses(
        receiver: tuple[int, Received]) -> None:
    port, seen = receiver
    # The receiver listens on 127.0.0.1 only: at 127.0.0.2 the connection is refused.
    status = _post(f"http://hooks.example:{port}/", allow_private=True,
                   resolve=lambda host, p: ["127.0.0.2", "127.0.0.1"])
    assert status == 204 and len(seen.requests) == 1


@pytest.fixture
def rebinding(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """``rebind.example`` answers a public address first, 127.0.0.1 afterwards (through
    socket.getaddrinfo, as the system resolver would); connecting to the public address
    is refused here instead of leaving the machine. Yields the addresses connected to."""
    real_getaddrinfo, real_connect = socket.getaddrinfo, socket.create_connection
    answers = iter([PUBLIC])
    connected: list[Any] = []

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "rebind.example":
            host = next(answers, "127.0.0.1")
        return real_getaddrinfo(host, port, *args, **kwargs)

    def create_connection(address: Any, *args: Any, **kwargs: Any) -> socket.socket:
        connected.append(address[0])
        if address[0] == PUBLIC:
            raise ConnectionRefusedError("not leaving this machine in a test")
        return real_connect(address, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket, "create_connection", create_connection)
    yield connected


def test_a_name_that_rebinds_to_127_0_0_1_never_reaches_it(
        receiver: tuple[int, Received], rebinding: list[Any]) -> None:
    port, seen = receiver
    with pytest.raises(TransientError, match="could not reach"):
        _post(f"http://rebind.example:{port}/hook")
    assert seen.requests == []
    assert rebinding == [PUBLIC]


def test_tls_goes_to_the_checked_address_with_the_name_for_sni_and_certificate() -> None:
    ca = trustme.CA()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("hooks.example").configure_cert(server_tls)
    names: list[str | None] = []

    def note_name(sock: ssl.SSLObject, name: str | None, context: ssl.SSLContext) -> None:
        names.append(name)

    server_tls.sni_callback = note_name  # type: ignore[assignment]
    seen = Received()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            seen.requests.append((self.headers.get("Host", ""), self.path))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = server_tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    port = server.server_address[1]
    client_tls = ssl.create_default_context()
    ca.configure_trust(client_tls)
    try:
        status = _post(f"https://hooks.example:{port}/tls", allow_private=True,
                       resolve=lambda host, p: ["127.0.0.1"], tls=client_tls)
        assert status == 200
        assert names == ["hooks.example"]
        assert seen.requests == [(f"hooks.example:{port}", "/tls")]
        # A certificate for another name is refused, though the address is the same.
        with pytest.raises(TransientError, match="certificate"):
            _post(f"https://other.example:{port}/tls", allow_private=True,
                  resolve=lambda host, p: ["127.0.0.1"], tls=client_tls)
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def trickler() -> Iterator[Callable[[], int]]:
    """A peer that accepts, then sends one byte of a status line every 0.2 s, forever:
    no single read ever waits long enough to time out."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=drip, args=(conn,), daemon=True).start()

    def drip(conn: socket.socket) -> None:
        with conn:
            conn.settimeout(0.1)
            while not stop.wait(0.2):
                with contextlib.suppress(TimeoutError):
                    conn.recv(65536)  # the request, as it comes
                try:
                    conn.sendall(b"H")
                except OSError:
                    return

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield lambda: int(listener.getsockname()[1])
    finally:
        stop.set()
        listener.close()


def test_a_trickling_receiver_is_cut_off_at_the_deadline(
        trickler: Callable[[], int]) -> None:
    started = time.monotonic()
    with pytest.raises(TransientError, match="longer than 1 s"):
        _post(f"http://slow.example:{trickler()}/", allow_private=True, timeout_s=1,
              deadline_s=1, resolve=lambda host, p: ["127.0.0.1"])
    assert time.monotonic() - started < 2.5


def test_a_name_that_takes_too_long_to_resolve_ends_at_the_deadline(
        receiver: tuple[int, Received]) -> None:
    """getaddrinfo waits as long as the system resolver is set to: the lookup counts
    against the deadline like the rest of the exchange."""
    port, seen = receiver
    answer = threading.Event()

    def slow(host: str, p: int) -> list[str]:
        answer.wait(10)  # a name server that does not answer
        return ["127.0.0.1"]

    started = time.monotonic()
    try:
        with pytest.raises(TransientError, match=re.escape(
                "cannot resolve slow.example: no answer within 0.5 s")):
            _post(f"http://slow.example:{port}/", allow_private=True, deadline_s=0.5,
                  resolve=slow)
        assert time.monotonic() - started < 1.5
    finally:
        answer.set()
    assert seen.requests == []
    # A name that answers in time is delivered to as ever.
    assert _post(f"http://quick.example:{port}/", allow_private=True, deadline_s=2,
                 resolve=lambda host, p: ["127.0.0.1"]) == 204


def test_the_io_types_run_on_the_io_worker_alone_with_an_attempt_ceiling() -> None:
    registry = tasks.load(include_test_tasks=True)
    io = tasks.in_pool(registry, "io")
    assert set(io) == {"webhook.deliver", "email.send"}
    assert not set(io) & set(tasks.in_pool(registry, "images"))
    assert {t.queue for t in io.values()} == set(tasks.IO_QUEUES)
    assert all(t.max_attempts is not None and t.max_attempts <= 5 for t in io.values())
    assert set(tasks.io_queues()) == {"webhooks", "webhooks.high", "webhooks.low",
                                      "email", "email.high", "email.low"}
