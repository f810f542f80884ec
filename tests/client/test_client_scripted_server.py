"""The client session against a scripted server built on the real ServerConnection, over loopback TCP.

Covers what the real server never does on purpose: ERROR_MESSAGE, REMOTE_LOG, audio, malformed frames,
silence, a dropped connection, and what the client must send (capabilities, stream start, frames, PING).
"""

from __future__ import annotations

import asyncio
import io
import struct
import time
from collections.abc import Awaitable, Callable

import pytest

from asciichat_server.client.address import parse_target
from asciichat_server.client.display import FrameDisplay
from asciichat_server.client.options import ClientOptions
from asciichat_server.client.session import EXIT_OK, ClientError, ClientSession
from asciichat_server.protocol import (
    AsciiFrame,
    AudioOpusBatch,
    ClientCapabilities,
    ErrorMessage,
    HandshakeComplete,
    ImageFrame,
    PacketReceived,
    PacketType,
    RemoteLog,
    ServerConnection,
    ServerSecurity,
    ServerState,
    StreamFlags,
    StreamType,
    encode_packet,
)


class ScriptedServer:
    """Accepts one client, completes the real handshake, records what arrives, runs `script` once
    CLIENT_CAPABILITIES is in."""

    def __init__(self, script: Callable[[ScriptedServer], Awaitable[None]], encrypt: bool = True) -> None:
        self.script = script
        self.encrypt = encrypt
        self.received: list[tuple[int, bytes]] = []
        self.caps: ClientCapabilities | None = None
        self.conn: ServerConnection | None = None
        self._writer: asyncio.StreamWriter | None = None
        self.port = 0
        self._server: asyncio.AbstractServer | None = None
        self.script_task: asyncio.Task | None = None

    async def __aenter__(self) -> ScriptedServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.script_task:
            self.script_task.cancel()
        if self._writer:
            self._writer.close()
        self._server.close()
        await self._server.wait_closed()

    def count(self, ptype: int) -> int:
        return sum(1 for t, _ in self.received if t == ptype)

    async def send(self, ptype: int, payload: bytes = b"") -> None:
        self.conn.send(ptype, payload)
        await self.flush()

    async def send_raw_app_packet(self, ptype: int, payload: bytes) -> None:
        """Like send(); the core encrypts, so a malformed payload still reaches the client intact."""
        await self.send(ptype, payload)

    async def flush(self) -> None:
        for data in self.conn.data_to_send():
            self._writer.write(data)
        await self._writer.drain()

    async def close(self) -> None:
        self._writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self.conn = ServerConnection(ServerSecurity(encrypt=self.encrypt), "tcp")
        self.conn.start()
        try:
            while data := await reader.read(65536):
                for event in self.conn.receive_data(data):
                    if isinstance(event, PacketReceived):
                        ptype, payload = event.packet.type, event.packet.payload
                        self.received.append((ptype, payload))
                        if ptype == PacketType.CLIENT_CAPABILITIES and self.caps is None:
                            self.caps = ClientCapabilities.decode(payload)
                            self.script_task = asyncio.create_task(self.script(self))
                        elif ptype == PacketType.PING:
                            self.conn.send(PacketType.PONG)
                    elif isinstance(event, HandshakeComplete):
                        pass
                await self.flush()
        except (ConnectionError, OSError, asyncio.CancelledError):
            pass  # the test is over (client gone, or the server closed under us)


def _options(port: int, **kw: object) -> ClientOptions:
    base = {"width": 40, "height": 12, "fps": 20, "silence_timeout_s": 3.0}
    base.update(kw)
    return ClientOptions(target=parse_target(f"127.0.0.1:{port}"), **base)


def _frame(text: str, width: int = 40, height: int = 12) -> bytes:
    return AsciiFrame(width, height, text.encode()).encode()


async def test_error_message_ends_session_after_logs_audio_and_bad_frames() -> None:
    async def script(srv: ScriptedServer) -> None:
        await srv.send(PacketType.SERVER_STATE, ServerState(connected=1, active=1).encode())
        await srv.send(PacketType.REMOTE_LOG, RemoteLog(level=2, direction=1, message="hello from the test").encode())
        await srv.send(PacketType.AUDIO_OPUS_BATCH, AudioOpusBatch(frames=[b"\xfc\xff\xfe"] * 3).encode())
        await srv.send(PacketType.PING)
        # Malformed: width 0, then a checksum that does not match; the client skips both and goes on.
        bad = bytearray(_frame("xx"))
        await srv.send(PacketType.ASCII_FRAME, struct.pack(">I", 0) + bytes(bad[4:]))
        bad[16:20] = b"\x00\x00\x00\x01"
        await srv.send(PacketType.ASCII_FRAME, bytes(bad))
        await srv.send(PacketType.CLEAR_CONSOLE)
        await srv.send(PacketType.ASCII_FRAME, _frame("good\nframe"))
        await asyncio.sleep(0.3)
        await srv.send(PacketType.ERROR_MESSAGE, ErrorMessage(44, "go away, test says").encode())

    out = io.StringIO()
    async with ScriptedServer(script) as srv:
        session = ClientSession(_options(srv.port), FrameDisplay(out, tty=False))
        with pytest.raises(ClientError) as info:
            await asyncio.wait_for(session.run(), 10)
    assert info.value.message == "server error 44: go away, test says"
    assert info.value.exit_code == 1
    stats = session.stats
    assert stats.encrypted and stats.key_variant == "c41"
    assert stats.remote_logs == ["hello from the test"]
    assert stats.audio_batches == 1
    assert stats.bad_packets == 2
    assert stats.clear_consoles == 1 and stats.server_states == 1
    assert stats.frames_received == 1
    assert out.getvalue() == "good\nframe\n"
    assert srv.count(PacketType.PONG) == 1  # our PING was answered


async def test_client_sends_capabilities_stream_start_frames_and_pings() -> None:
    async def script(srv: ScriptedServer) -> None:
        for n in range(30):
            await srv.send(PacketType.ASCII_FRAME, _frame(f"frame {n}"))
            await asyncio.sleep(0.05)
        await srv.close()

    out = io.StringIO()
    async with ScriptedServer(script) as srv:
        session = ClientSession(_options(srv.port, head_caps=True, palette_type=4), FrameDisplay(out, tty=False))
        with pytest.raises(ClientError, match="connection lost"):
            await asyncio.wait_for(session.run(), 10)
    # The first application packet is CLIENT_CAPABILITIES (the C server insists), then STREAM_START(VIDEO).
    assert [t for t, _ in srv.received[:2]] == [PacketType.CLIENT_CAPABILITIES, PacketType.STREAM_START]
    assert StreamFlags.decode(srv.received[1][1]).streams == StreamType.VIDEO
    caps = srv.caps
    assert (caps.width, caps.height, caps.desired_fps, caps.palette_type) == (40, 12, 20, 4)
    assert caps.codec_video == 0x01  # --head-caps: the 168-byte layout
    frames = [ImageFrame.decode(p) for t, p in srv.received if t == PacketType.IMAGE_FRAME]
    assert len(frames) >= 10  # 20 fps for ~1.5 s
    assert all((f.width, f.height, len(f.pixels)) == (480, 270, 480 * 270 * 3) for f in frames)
    assert frames[0].pixels != frames[-1].pixels  # the pattern moves
    assert srv.count(PacketType.PING) >= 1
    assert out.getvalue().splitlines()[:3] == ["frame 0", "frame 1", "frame 2"]


async def test_snapshot_waits_from_first_frame_and_prints_the_newest() -> None:
    first_sent: list[float] = []

    async def script(srv: ScriptedServer) -> None:
        await asyncio.sleep(0.5)  # nothing for a while: the delay must not run yet
        for n in range(100):
            await srv.send(PacketType.ASCII_FRAME, _frame(f"frame {n}"))
            first_sent.append(time.monotonic())
            await asyncio.sleep(0.05)

    out = io.StringIO()
    async with ScriptedServer(script, encrypt=False) as srv:
        session = ClientSession(
            _options(srv.port, encrypt=False, snapshot=True, snapshot_delay_s=0.4), FrameDisplay(out, tty=False)
        )
        code = await asyncio.wait_for(session.run(), 10)
        finished = time.monotonic()
    assert code == EXIT_OK
    shown = out.getvalue()
    assert shown.count("\n") == 1 and shown.startswith("frame ")
    # The newest frame received, not the first; and only after the delay counted from the first frame.
    assert int(shown.split()[1]) == session.stats.frames_received - 1
    assert finished - first_sent[0] >= 0.4
    assert not session.stats.encrypted


async def test_silent_server_is_given_up() -> None:
    async def script(srv: ScriptedServer) -> None:
        await asyncio.sleep(30)

    async with ScriptedServer(script) as srv:
        session = ClientSession(
            _options(srv.port, silence_timeout_s=0.8, send_video=False), FrameDisplay(io.StringIO(), False)
        )
        with pytest.raises(ClientError, match=r"no data from server for 0.8s during the session"):
            await asyncio.wait_for(session.run(), 10)


async def test_server_that_never_answers_the_handshake() -> None:
    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        await asyncio.sleep(5)
        writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        session = ClientSession(_options(port, silence_timeout_s=0.5), FrameDisplay(io.StringIO(), False))
        with pytest.raises(ClientError, match="during the handshake"):
            await asyncio.wait_for(session.run(), 10)
    finally:
        server.close()
        await server.wait_closed()


async def test_garbage_from_server_is_a_protocol_error() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n" + bytes(64))
        await writer.drain()
        await asyncio.sleep(2)
        writer.close()

    server = await asyncio.start_server(garbage, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        session = ClientSession(_options(port), FrameDisplay(io.StringIO(), False))
        with pytest.raises(ClientError, match=r"handshake failed: .*magic"):
            await asyncio.wait_for(session.run(), 10)
    finally:
        server.close()
        await server.wait_closed()


async def test_plaintext_packet_in_encrypted_session_is_refused_and_reported() -> None:
    async def script(srv: ScriptedServer) -> None:
        await srv.send(PacketType.ASCII_FRAME, _frame("ok"))
        await asyncio.sleep(0.2)
        srv._writer.write(encode_packet(PacketType.PING))  # bypasses the core: not wrapped in ENCRYPTED
        await srv._writer.drain()

    async with ScriptedServer(script) as srv:
        session = ClientSession(_options(srv.port, send_video=False), FrameDisplay(io.StringIO(), False))
        with pytest.raises(ClientError, match=r"^protocol error: ") as info:
            await asyncio.wait_for(session.run(), 10)
        await asyncio.sleep(0.2)
    assert info.value.lost  # like the C client: after the handshake, a receive error means reconnect
    errors = [ErrorMessage.decode(p) for t, p in srv.received if t == PacketType.ERROR_MESSAGE]
    assert len(errors) == 1 and errors[0].code == 44
    assert errors[0].message == info.value.message.removeprefix("protocol error: ")


async def test_websocket_text_message_and_subprotocol() -> None:
    from aiohttp import web

    seen: dict[str, object] = {}

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=("acip",))
        await ws.prepare(request)
        seen["protocol"] = ws.ws_protocol
        seen["deflate"] = request.headers.get("Sec-WebSocket-Extensions", "")
        await ws.send_str("hello")  # ACIP is binary only
        await asyncio.sleep(1)
        await ws.close()
        return ws

    app = web.Application()
    app.router.add_get("/room", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        options = ClientOptions(target=parse_target(f"ws://127.0.0.1:{port}/room"), silence_timeout_s=3.0)
        session = ClientSession(options, FrameDisplay(io.StringIO(), False))
        with pytest.raises(ClientError, match="text WebSocket message"):
            await asyncio.wait_for(session.run(), 10)
    finally:
        await runner.cleanup()
    assert seen == {"protocol": "acip", "deflate": ""}  # subprotocol asked for, no permessage-deflate offered
