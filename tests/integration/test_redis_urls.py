"""Redis as deployments really have it: a password, TLS (``rediss://``), and one Redis
shared by two deployments that keep apart by REDIS_PREFIX.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import quote

import httpx
import pytest
import redis
import trustme

from server.infra.embedded_redis import EmbeddedRedis
from tests.conftest import Databases, Stack, running_stack
from tests.factories import LiveClient, connected, jpeg_bytes, new_token, upload

# Its subject is Redis URLs, passwords, TLS and prefixes, not the database: SQLite alone.
pytestmark = [pytest.mark.integration, pytest.mark.one_database]

PASSWORD = "s3cret pass/word"  # a space and a slash: the URL must quote it
QUOTED = quote(PASSWORD, safe="")


class TlsTerminator:
    """TLS in front of a plain Redis, as stunnel or a managed Redis's proxy does it:
    clients speak real TLS (and check the certificate); Redis sees plain TCP."""

    def __init__(self, upstream_port: int, context: ssl.SSLContext) -> None:
        self.upstream_port = upstream_port
        self.context = context
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="tls-terminator")

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError, ssl.SSLError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _handle(self, client_r: asyncio.StreamReader,
                      client_w: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(self._pipe(client_r, up_w), self._pipe(up_r, client_w))

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self.context))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        server.close()
        for task in asyncio.all_tasks(self._loop):
            task.cancel()
        self._loop.run_until_complete(asyncio.sleep(0))
        self._loop.close()

    def start(self) -> TlsTerminator:
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@dataclass
class SharedRedis:
    plain_url: str   # redis://:password@host:port/0
    tls_url: str     # rediss://:password@host:tls-port/0?ssl_ca_certs=…
    client: redis.Redis


@pytest.fixture(scope="module")
def shared_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SharedRedis]:
    base = tmp_path_factory.mktemp("redis-auth")
    server = EmbeddedRedis(base, persistent=False, use_socket=False, password=PASSWORD).start()
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(context)
    ca_file = base / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    terminator = TlsTerminator(server.port, context).start()
    tls_url = (f"rediss://:{QUOTED}@127.0.0.1:{terminator.port}/0"
               f"?ssl_ca_certs={quote(str(ca_file))}")
    client = redis.Redis.from_url(server.url)
    try:
        yield SharedRedis(server.url, tls_url, client)
    finally:
        client.close()
        terminator.stop()
        server.stop()


@pytest.fixture(scope="module")
def alpha(shared_redis: SharedRedis, databases: Databases,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A deployment that reaches Redis over TLS with a password."""
    with running_stack(shared_redis.tls_url, databases.new(), tmp_path_factory.mktemp("alpha"),
                       REDIS_PREFIX="alpha", io_worker=False) as stack:
        yield stack


@pytest.fixture(scope="module")
def beta(shared_redis: SharedRedis, databases: Databases,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Another deployment on the same Redis (plain TCP, same password), prefix beta."""
    with running_stack(shared_redis.plain_url, databases.new(), tmp_path_factory.mktemp("beta"),
                       REDIS_PREFIX="beta", io_worker=False) as stack:
        yield stack


async def _process_one(stack: Stack, sockets: list[LiveClient]) -> str:
    async with httpx.AsyncClient(base_url=stack.url, timeout=30) as http:
        token = await new_token(http)
        client = await connected(stack.url, token, sockets)
        response = await upload(http, token, jpeg_bytes(900, 600, color=(30, 60, 90)))
        assert response.status_code == 202, response.text
        job_id = str(response.json()["job"]["id"])
        name, _ = await client.wait_final(job_id)
        assert name == "job:completed"
        health = (await http.get("/healthz")).json()
        assert health["redis"] == "ok"
        return job_id


def test_a_password_is_required(shared_redis: SharedRedis) -> None:
    without = redis.Redis.from_url(shared_redis.plain_url.replace(f":{QUOTED}@", ""))
    with pytest.raises(redis.AuthenticationError):
        without.ping()
    without.close()


async def test_rediss_with_a_password_runs_the_whole_pipeline(
        alpha: Stack, sockets: list[LiveClient]) -> None:
    await _process_one(alpha, sockets)
    assert alpha.env["REDIS_URL"].startswith("rediss://")


async def test_two_deployments_share_a_redis_by_prefix(
        alpha: Stack, beta: Stack, shared_redis: SharedRedis,
        sockets: list[LiveClient]) -> None:
    alpha_job = await _process_one(alpha, sockets)
    beta_job = await _process_one(beta, sockets)
    # Every key and channel either deployment made lives under its own prefix.
    names = [key.decode() for key in shared_redis.client.scan_iter(count=1000)]
    assert names, "the deployments keep their queues and heartbeats in this Redis"
    strays = [n for n in names if not n.startswith(("alpha:", "beta:"))]
    assert strays == []
    channels = {c.decode() for c in shared_redis.client.pubsub_channels()}
    assert channels == {"alpha:events", "beta:events"}
    # And neither saw the other's job: each socket got only its own deployment's events.
    seen = [{d["job"]["id"] for n, d in client.events if n.startswith("job:")}
            for client in sockets]
    assert seen == [{alpha_job}, {beta_job}]


def test_tls_checks_the_certificate(shared_redis: SharedRedis) -> None:
    """Without the private CA (``ssl_ca_certs``) the server's certificate is refused."""
    unverified = redis.Redis.from_url(shared_redis.tls_url.split("?", 1)[0],
                                      socket_connect_timeout=5)
    with pytest.raises(redis.ConnectionError, match=r"(?i)certificate"):
        unverified.ping()
    unverified.close()
