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
other error with a warning); the others still get the event, as with the tasks. Emits with an
acknowledgement callback keep python-socketio's own path.
"""

from __future__ import annotations

import logging
from typing import Any

import socketio
from engineio import packet as eio_packet
from engineio.exceptions import SocketIsClosedError
from socketio import packet

log = logging.getLogger(__name__)


class DirectManager(socketio.AsyncManager):  # type: ignore[misc]
    """``socketio.AsyncManager`` whose emits without a callback make no task per recipient."""

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
            try:
                for pkt in packets:
                    await self.server._send_eio_packet(eio_sid, pkt)
            except SocketIsClosedError:  # it closed as the event came: nothing to tell
                log.debug("socket %s closed before %s", eio_sid, event)
            except Exception:  # one broken socket must not keep the event from the rest
                log.warning("could not hand %s to socket %s", event, eio_sid, exc_info=True)
