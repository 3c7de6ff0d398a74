"""Socket.IO's client manager, with emits that hand packets over in the caller's turn.

python-socketio's ``AsyncManager.emit`` starts a task per recipient and waits for them all
with ``asyncio.wait``. Handing a packet to a socket is a put on that socket's unbounded
queue, which never waits, yet each emit then costs the caller three turns of the event
loop (the tasks run, their completion callbacks run, the caller wakes). The relay emits
one event after another, so under load, when every turn of the loop also carries upload
work, a burst of events queued behind one another waited three turns each. Here the
packets are handed over directly, one recipient after another, in the emit's own turn:
each socket's writer task still sends them (next turn), in the order they were emitted.

A recipient whose hand-over fails is skipped (a socket that closed meanwhile quietly, any
other error with a warning); the others still get the event, as with the tasks. One
hand-over can take long: engine.io closes a socket whose client stopped answering pings
in its send, running the disconnect handlers (which release the socket in Redis). Such a
socket's hand-over runs in a task of its own, as python-socketio's would, which nobody
waits for: a dying socket holds up neither the other recipients nor the relay. (At
shutdown such a task is left to finish or be cancelled with the loop, like engine.io's
own closing of sockets that time out.) Emits with an
acknowledgement callback keep python-socketio's own path.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import msgspec
import socketio
from engineio import json as eio_json
from engineio import packet as eio_packet
from engineio.exceptions import SocketIsClosedError
from socketio import packet

log = logging.getLogger(__name__)


class PacketJson:
    """The JSON python-socketio and engine.io packets are made with (``AsyncServer(json=)``,
    which sets it on their packet classes for the whole process): msgspec's encoder,
    about seven times faster than ``json.dumps`` on a ``job:*`` event's <Job> (compact
    either way; characters past ASCII go as UTF-8, not as ``\\u`` escapes, which JSON
    readers take alike), and the standard library's for what msgspec refuses (a ``str``
    subclass, a lone surrogate, a key that is not a string or number), as before. (It
    writes NaN as null, which the standard library wrote as invalid JSON, and encodes a
    few types the standard library refused; no packet carries either.) Decoding what
    clients send stays engine.io's (the standard library's, with its cap on
    a number's digits)."""

    _encoder = msgspec.json.Encoder()

    @staticmethod
    def dumps(obj: Any, separators: tuple[str, str] | None = None) -> str:
        try:
            return PacketJson._encoder.encode(obj).decode()
        except (TypeError, ValueError, msgspec.EncodeError):  # a lone surrogate: ValueError
            return str(eio_json.dumps(obj, separators=separators))

    loads = staticmethod(eio_json.loads)


class DirectManager(socketio.AsyncManager):  # type: ignore[misc]
    """``socketio.AsyncManager`` whose emits without a callback make no task per recipient."""

    def __init__(self) -> None:
        super().__init__()
        # Hand-overs to sockets being closed, running on their own (referenced till done).
        self._closing: set[asyncio.Task[None]] = set()

    async def emit(self, event: str, data: Any, namespace: str, room: Any = None,
                   skip_sid: Any = None, callback: Any = None, to: Any = None,
                   **kwargs: Any) -> None:
        if callback is not None:
            await super().emit(event, data, namespace, room=room, skip_sid=skip_sid,
                               callback=callback, to=to, **kwargs)
            return
        room = to or room
        if namespace not in self.rooms:
            return
        # As AsyncManager.emit: a tuple is several arguments, anything else (but None) one.
        if isinstance(data, tuple):
            args = list(data)
        elif data is not None:
            args = [data]
        else:
            args = []
        skip = skip_sid if isinstance(skip_sid, list) else [skip_sid]
        recipients = [eio_sid for sid, eio_sid in self.get_participants(namespace, room)
                      if sid not in skip]
        if not recipients:
            return
        # Every recipient gets the same packets: encoded once.
        encoded = self.server.packet_class(packet.EVENT, namespace=namespace,
                                           data=[event, *args]).encode()
        if not isinstance(encoded, list):
            encoded = [encoded]
        packets = [eio_packet.Packet(eio_packet.MESSAGE, part) for part in encoded]
        for eio_sid in recipients:
            if self._closes_in_send(eio_sid):
                task = asyncio.create_task(self._hand_over(event, eio_sid, packets))
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)
            else:
                await self._hand_over(event, eio_sid, packets)

    async def _hand_over(self, event: str, eio_sid: str, packets: list[Any]) -> None:
        try:
            for pkt in packets:
                await self.server._send_eio_packet(eio_sid, pkt)
        except SocketIsClosedError:  # it closed as the event came: nothing to tell
            log.debug("socket %s closed before %s", eio_sid, event)
        except Exception:  # one broken socket must not keep the event from the rest
            log.warning("could not hand %s to socket %s", event, eio_sid, exc_info=True)

    def _closes_in_send(self, eio_sid: str) -> bool:
        """Whether engine.io will close this socket in its send: its client is past the
        ping timeout (``AsyncSocket.check_ping_timeout``'s own test)."""
        eio = self.server.eio
        socket = eio.sockets.get(eio_sid)
        last_ping = getattr(socket, "last_ping", None)
        return last_ping is not None and time.time() - last_ping > eio.ping_timeout
