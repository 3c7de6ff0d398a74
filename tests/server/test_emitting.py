"""``server.web.live.emitting.DirectManager``: Socket.IO emits that hand packets over in the
caller's turn of the event loop.

Proven here (no I/O: a Socket.IO server that is never served, its hand-over recorded):
- each participant of the rooms gets the event once, with exactly the packets
  python-socketio's own manager sends for the same emit (one argument, several, none,
  binary), skipped sids skipped, an unknown room or namespace sends nothing;
- the emit never yields to the event loop: a callback scheduled before it has not run
  when it returns (python-socketio's own manager takes turns of the loop for tasks);
- a socket that closed, or fails otherwise, is skipped and the others still get the event;
- a socket past engine.io's ping timeout (real engine.io sockets), which engine.io closes
  in the send, running the disconnect handlers, gets the event in a task of its own: the
  others have theirs in the emit's turn, and the emit does not wait for the close;
- an emit with an acknowledgement callback keeps python-socketio's path (an ack id);
- the relay, whose emits now take no turn of the event loop, still gives the loop a turn
  at least every ``relay.TURN_EVERY`` events of a burst.

The relay's tests (``test_bus_relay.py``) and the app's run the same manager with real
clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import engineio
import pytest
import socketio
from engineio.async_socket import AsyncSocket
from engineio.exceptions import SocketIsClosedError

from server.core.events import JobEvent
from server.infra.settings import Settings
from server.web.app import create_app
from server.web.live import relay
from server.web.live.emitting import DirectManager, PacketJson

ROOMS = {"s1": ("e1", ["user:a", "admins"]), "s2": ("e2", ["user:a"]),
         "s3": ("e3", ["admins"]), "s4": ("e4", ["user:b"])}


class Recorded:
    """A Socket.IO server whose engine.io hand-over is recorded, not sent."""

    def __init__(self, manager: socketio.AsyncManager,
                 failing: dict[str, Exception] | None = None) -> None:
        self.sio = socketio.AsyncServer(async_mode="asgi", client_manager=manager)
        self.sent: list[tuple[str, Any]] = []
        failing = failing or {}

        async def send(eio_sid: str, pkt: Any) -> None:
            if eio_sid in failing:
                raise failing[eio_sid]
            self.sent.append((eio_sid, pkt.encode()))

        self.sio._send_eio_packet = send  # type: ignore[method-assign]
        for sid, (eio_sid, rooms) in ROOMS.items():
            # As python-socketio's connect: the namespace's room, then the socket's own.
            manager.basic_enter_room(sid, "/", None, eio_sid=eio_sid)
            manager.basic_enter_room(sid, "/", sid)
            for room in rooms:
                manager.basic_enter_room(sid, "/", room, eio_sid=eio_sid)

    async def emit(self, *args: Any, **kwargs: Any) -> list[tuple[str, Any]]:
        self.sent.clear()
        await self.sio.emit(*args, **kwargs)
        return list(self.sent)


@pytest.mark.parametrize("data", [{"job": {"id": "J1", "seq": 3}}, ("one", 2), None,
                                  {"blob": b"\x00\x01bytes"}],
                         ids=["one argument", "several", "none", "binary"])
@pytest.mark.parametrize(("room", "skip"), [
    (["user:a", "admins"], None), ("user:a", "s2"), (["admins", "user:b"], ["s1", "s4"]),
    ("nobody", None),
], ids=["two rooms, shared member", "skip one", "skip several", "empty room"])
async def test_the_same_packets_as_python_socketios_manager_each_recipient_once(
        data: Any, room: Any, skip: Any) -> None:
    ours = await Recorded(DirectManager()).emit("job:queued", data, room=room, skip_sid=skip)
    theirs = await Recorded(socketio.AsyncManager()).emit("job:queued", data, room=room,
                                                          skip_sid=skip)
    # The same recipients in the same order, each with its packets in order.
    assert ours == theirs
    recipients = [eio_sid for eio_sid, _ in ours]
    # Once each: one packet, or two for binary data (the event, then its attachment).
    per_recipient = 2 if isinstance(data, dict) and "blob" in data else 1
    assert all(recipients.count(eio_sid) == per_recipient for eio_sid in recipients)
    if room == "nobody":
        assert ours == []
    else:
        assert set(recipients) == {ROOMS[sid][0] for sid, (_, rooms) in ROOMS.items()
                                   if set(rooms) & set([room] if isinstance(room, str) else room)
                                   and sid not in (skip if isinstance(skip, list) else [skip])}


async def test_to_a_single_socket_and_to_an_unknown_namespace() -> None:
    recorded = Recorded(DirectManager())
    assert [eio for eio, _ in await recorded.emit("jobs:snapshot", {"jobs": []}, to="s3")] \
        == ["e3"]
    assert await recorded.emit("jobs:snapshot", {"jobs": []}, to="s3", namespace="/other") == []


async def test_an_emit_never_yields_to_the_event_loop() -> None:
    """Packets are handed to every recipient within the caller's turn: nothing else runs
    meanwhile (python-socketio's own manager waits for a task per recipient)."""
    ran: list[str] = []
    recorded = Recorded(DirectManager())
    asyncio.get_running_loop().call_soon(ran.append, "another callback")
    sent = await recorded.emit("job:progress", {"job": {"id": "J1"}},
                               room=["user:a", "admins"])
    assert ran == [], "the emit gave the loop a turn"
    assert {eio for eio, _ in sent} == {"e1", "e2", "e3"}
    await asyncio.sleep(0)
    assert ran == ["another callback"]


async def test_a_closed_or_failing_socket_is_skipped_and_the_rest_get_the_event(
        caplog: pytest.LogCaptureFixture) -> None:
    recorded = Recorded(DirectManager(), failing={"e1": SocketIsClosedError(),
                                                  "e2": RuntimeError("broken pipe")})
    with caplog.at_level(logging.DEBUG, logger="server.web.live.emitting"):
        sent = await recorded.emit("job:completed", {"job": {"id": "J1"}},
                                   room=["user:a", "admins"])
    assert [eio for eio, _ in sent] == ["e3"]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "e2" in warnings[0].getMessage()
    assert warnings[0].exc_info is not None, "an unexpected failure keeps its traceback"
    assert any(r.levelno == logging.DEBUG and "e1" in r.getMessage() for r in caplog.records)


async def test_a_socket_past_its_ping_timeout_is_closed_on_the_side() -> None:
    """engine.io sockets (no transport): the one whose client stopped answering pings is
    closed by engine.io's send, and its disconnect handler (held here) would hold up the
    emit; the other sockets (one between pings, ``last_ping`` None) have the event in
    their queues when the emit returns, in order, and the close runs afterwards."""
    sio = socketio.AsyncServer(async_mode="asgi", client_manager=DirectManager())
    manager = sio.manager
    released = asyncio.Event()
    disconnected: list[str] = []

    async def on_disconnect(sid: str, reason: Any = None) -> None:
        disconnected.append(sid)
        await released.wait()

    sio.on("disconnect", on_disconnect)
    sockets = {}
    for sid, (eio_sid, rooms) in ROOMS.items():
        sockets[eio_sid] = sio.eio.sockets[eio_sid] = AsyncSocket(sio.eio, eio_sid)
        sio.environ[eio_sid] = {}
        manager.basic_enter_room(sid, "/", None, eio_sid=eio_sid)
        manager.basic_enter_room(sid, "/", sid)
        for room in rooms:
            manager.basic_enter_room(sid, "/", room, eio_sid=eio_sid)
    sockets["e1"].last_ping = time.time() - sio.eio.ping_timeout - 1  # gone quiet
    # engine.io's state between pings (after the handshake and after each pong): healthy.
    sockets["e3"].last_ping = None
    for seq in (1, 2):
        # In this task, no turn of the loop between the emit and the checks: whatever
        # the queues hold was handed over inside the emit. An emit held by the close
        # would not return (the timeout says so).
        async with asyncio.timeout(2):
            await sio.emit("job:progress", {"job": {"id": "J1", "seq": seq}},
                           room=["user:a", "admins"])
        for eio_sid in ("e2", "e3"):
            pkt = sockets[eio_sid].queue.get_nowait()
            assert pkt.data.rsplit('"seq":', 1)[1] == f"{seq}}}}}]", (eio_sid, pkt.data)
            assert sockets[eio_sid].queue.qsize() == 0
        assert disconnected == [], "the close has not run yet: it waits for a turn"
    assert sockets["e4"].queue.qsize() == 0, "not in those rooms"
    await asyncio.sleep(0)
    assert disconnected == ["s1"] and sockets["e1"].closing and not sockets["e1"].closed
    assert manager._closing, "the close runs on its own, not awaited by the emit"
    released.set()
    for _ in range(10):
        await asyncio.sleep(0)
    assert sockets["e1"].closed and not manager._closing


async def test_an_emit_with_a_callback_keeps_python_socketios_path() -> None:
    manager = DirectManager()
    recorded = Recorded(manager)
    sent_packets: list[tuple[str, Any]] = []

    async def send_packet(eio_sid: str, pkt: Any) -> None:
        sent_packets.append((eio_sid, pkt))

    recorded.sio._send_packet = send_packet  # type: ignore[method-assign]
    await recorded.sio.emit("ping", {"n": 1}, to="s4", callback=lambda *_: None)
    [(eio_sid, pkt)] = sent_packets
    assert eio_sid == "e4" and pkt.id is not None, "an ack id, as python-socketio gives"


def test_the_apps_socketio_server_runs_this_manager(tmp_path: Path) -> None:
    settings = Settings.from_env({"DATA_DIR": str(tmp_path),
                                  "REDIS_URL": "redis://127.0.0.1:1/0"})
    sio = create_app(settings).app.engineio_server
    assert isinstance(sio, socketio.AsyncServer)
    assert type(sio.manager) is DirectManager
    # Its packets, engine.io's included, are made with msgspec's encoder.
    assert sio.packet_class.json is PacketJson
    assert engineio.packet.Packet.json is PacketJson


@pytest.mark.parametrize("data", [
    ["job:completed", {"job": {"id": "J1", "filename": "été 📷 \"q\" \\ </script>",
                               "progress": 100, "ratio": 0.1, "error": None,
                               "result": {"image": {"width": 4000, "tags": []}}},
                       "seq": 12345678901, "published_at": 1765152000.123456}],
    {"message": "too_many_sockets: at most 20"}, "plain", 3, None, [],
], ids=["event", "connect error", "string", "number", "null", "empty"])
def test_packets_encode_compact_json_any_reader_takes_alike(data: Any) -> None:
    """What a Socket.IO packet carries reads back the same with any JSON reader (here the
    standard library's), compact as python-socketio makes it."""
    encoded = PacketJson.dumps(data, separators=(",", ":"))
    assert json.loads(encoded) == data == PacketJson.loads(encoded)
    assert len(encoded) <= len(json.dumps(data, separators=(",", ":")))
    packet = _Packet(socketio.packet.EVENT, data=["job:queued", data])
    assert json.loads(packet.encode()[1:]) == ["job:queued", data]


class _Packet(socketio.packet.Packet):  # type: ignore[misc]
    """A Socket.IO packet made as the app's server makes them."""

    json = PacketJson


class _Tag(str):
    """A str subclass: msgspec refuses it, the standard library takes it as a string."""


@pytest.mark.parametrize("data", [{"name": _Tag("x")}, {"text": "lone \ud800"},
                                  {1: "a", None: "b"}],
                         ids=["str subclass", "lone surrogate", "key not a string"])
def test_what_msgspec_refuses_is_encoded_as_before(data: Any) -> None:
    assert PacketJson.dumps(data, separators=(",", ":")) == json.dumps(
        data, separators=(",", ":"))


def test_what_clients_send_is_read_with_engineios_cap_on_digits() -> None:
    with pytest.raises(ValueError, match="too large"):
        PacketJson.loads("[" + "9" * 101 + "]")


async def test_the_relay_gives_the_loop_a_turn_in_a_burst_of_events() -> None:
    """Events already read come without a wait and emits take no turn: in a burst the
    relay still lets the rest of the loop run, at least every TURN_EVERY events."""
    burst = 3 * relay.TURN_EVERY + 5
    seen_by_others: list[int] = []
    emitted: list[str] = []

    class Burst:
        async def listen(self) -> AsyncIterator[JobEvent]:
            for n in range(burst):
                yield JobEvent("job:progress", "u1", {"id": f"J{n}", "seq": 1})
            await asyncio.Event().wait()  # then quiet

    class Emits:
        async def emit(self, name: str, data: Any, room: Any = None) -> None:
            emitted.append(data["job"]["id"])

    def other_work() -> None:  # what else the loop has to do, again and again
        seen_by_others.append(len(emitted))
        if len(emitted) < burst:
            asyncio.get_running_loop().call_soon(other_work)

    asyncio.get_running_loop().call_soon(other_work)
    task = asyncio.create_task(relay.relay_events(Burst(), Emits(),  # type: ignore[arg-type]
                                                  resync=no_resync))
    while len(emitted) < burst:
        await asyncio.sleep(0)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    gaps = [b - a for a, b in itertools.pairwise(seen_by_others)]
    assert max(gaps) <= relay.TURN_EVERY, f"events relayed between turns: {gaps}"


async def no_resync() -> None:
    raise AssertionError("no gap in this bus")
