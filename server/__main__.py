"""``python -m server``: run the web process with uvicorn."""

from __future__ import annotations

import logging

import uvicorn

from server.app import create_app
from server.settings import Settings


def main() -> None:
    settings = Settings.from_env()
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port,
                log_level=settings.log_level, proxy_headers=True, lifespan="on",
                # Refuse oversized WebSocket frames before buffering them; engine.io
                # checks the same bound on every transport.
                ws_max_size=settings.socket_max_message_bytes)


if __name__ == "__main__":
    main()
