"""``python -m server``: run the web process with uvicorn."""

from __future__ import annotations

import uvicorn

from server import logs
from server.app import create_app
from server.settings import Settings


def main() -> None:
    settings = Settings.from_env()
    logs.configure(settings.log_level, settings.log_format)
    # log_config=None: uvicorn's error and access lines go through our handler too.
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port,
                log_level=settings.log_level, log_config=None, proxy_headers=True,
                lifespan="on",
                # Refuse oversized WebSocket frames before buffering them; engine.io
                # checks the same bound on every transport.
                ws_max_size=settings.socket_max_message_bytes)


if __name__ == "__main__":
    main()
