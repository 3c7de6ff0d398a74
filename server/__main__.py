"""``python -m server``: run the web process with uvicorn."""

from __future__ import annotations

import sys

from server.infra import logs, tracing
from server.infra.settings import Settings


def _without_client_libraries(settings: Settings) -> None:
    """Mark the client libraries python-socketio would load as missing.

    The web process serves Socket.IO and never acts as a client, but python-socketio
    imports its client half, which would load aiohttp, requests and websocket-client when
    installed (for `darkroom watch`, or the tests): some 30 MB of memory per web process
    for nothing. Marked missing before anything imports socketio, engine.io's clients see
    no transport. With tracing on, the OTLP exporter sends with requests: it stays.
    """
    kept = {"requests"} if settings.tracing else set()
    for name in ("aiohttp", "requests", "websocket"):
        if name not in kept:
            sys.modules.setdefault(name, None)  # type: ignore[arg-type]


def main() -> None:
    # The event loop shares the GIL with threads (file writes, header probes, database
    # drivers); a 1 ms switch interval instead of 5 lets it relay an event sooner.
    sys.setswitchinterval(0.001)
    settings = Settings.from_env()
    _without_client_libraries(settings)
    import uvicorn

    from server.web.app import create_app

    logs.configure(settings.log_level, settings.log_format)
    tracing.configure(settings, "darkroom-web")
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
