"""``python -m server``: run the web process with uvicorn."""

from __future__ import annotations

import sys

# The web process serves Socket.IO and never acts as a client, but python-socketio imports
# its client half, which would load aiohttp, requests and websocket-client when installed
# (for `darkroom watch`, or the tests): some 30 MB of memory per web process for nothing.
# Marked missing before anything imports socketio, engine.io's clients see no transport.
for _client_library in ("aiohttp", "requests", "websocket"):
    sys.modules.setdefault(_client_library, None)  # type: ignore[arg-type]

import uvicorn  # noqa: E402

from server.infra import logs  # noqa: E402
from server.infra.settings import Settings  # noqa: E402
from server.web.app import create_app  # noqa: E402


def main() -> None:
    # The event loop shares the GIL with threads (file writes, header probes, database
    # drivers); a 1 ms switch interval instead of 5 lets it relay an event sooner.
    sys.setswitchinterval(0.001)
    settings = Settings.from_env()
    logs.configure(settings.log_level, settings.log_format)
    # log_config=None: uvicorn's error and access lines go through our handler too.
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port,
                log_level=settings.log_level, log_config=None, proxy_headers=True,
                # X-Forwarded-* only from TRUSTED_PROXIES (uvicorn's own default trusts any
                # local peer's, so a client on the host could pick its own address).
                forwarded_allow_ips=settings.trusted_proxies.forwarded_allow_ips(),
                lifespan="on",
                # Refuse oversized WebSocket frames before buffering them; engine.io
                # checks the same bound on every transport.
                ws_max_size=settings.socket_max_message_bytes)


if __name__ == "__main__":
    main()
