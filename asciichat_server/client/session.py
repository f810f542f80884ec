"""One client connection's life: transport <-> sans-I/O ClientConnection, video out, frames to the display.

All protocol decisions are made by ``asciichat_server.protocol.ClientConnection``; this module only
schedules (capabilities, stream start, frames at the chosen fps, PING every second) and moves bytes.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from asciichat_server.client.display import FrameDisplay
from asciichat_server.client.media import TestPattern, load_image
from asciichat_server.client.options import ClientOptions
from asciichat_server.client.transport import TcpTransport, TransportClosed, WsTransport, open_transport
from asciichat_server.log import log_every
from asciichat_server.protocol import (
    AsciiFrame,
    AuthFailure,
    AuthRejected,
    ClientCapabilities,
    ClientConnection,
    ClientSecurity,
    ConnectionState,
    ErrorMessage,
    HandshakeComplete,
    ImageFrame,
    PacketReceived,
    PacketType,
    ProtocolError,
    RemoteLog,
    ServerState,
    StreamFlags,
    StreamType,
)

__all__ = ["EXIT_FAILURE", "EXIT_OK", "ClientError", "ClientSession", "ClientStats", "run_client"]

log = logging.getLogger("asciichat.client")

EXIT_OK = 0
EXIT_FAILURE = 1

# The C client pings every second (PING_INTERVAL_NS).
PING_INTERVAL_S = 1.0
# How long a --snapshot run waits for its first frame once the session is open.
SNAPSHOT_FIRST_FRAME_TIMEOUT_S = 10.0
# A full server answers with the text line "SERVER_FULL: Maximum client limit reached\n" (c41 and ours).
SERVER_FULL_PREFIX = b"SERVER_FULL"
SERVER_FULL_PREFIX_LEN = 128
# Pixel format the native client puts in IMAGE_FRAME for RGB24 (ACIP.md 5.1.1).
PIXEL_FORMAT_RGB24 = 1
# The C client retries a lost connection after about a second.
RECONNECT_DELAY_S = 1.0
# REMOTE_LOG level byte -> logging level (DEV, DEBUG, INFO, WARN, ERROR, FATAL).
_REMOTE_LEVELS = [5, logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL]


class ClientError(Exception):
    """Ends the session with a one-line message and an exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILURE, lost: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        # True when an open session died (EOF, silence, send failure): the C client reconnects then.
        self.lost = lost


@dataclass
class ClientStats:
    handshake_s: float = 0.0
    encrypted: bool = False
    key_variant: str | None = None
    frames_sent: int = 0
    frames_received: int = 0
    bad_packets: int = 0
    audio_batches: int = 0
    pings_sent: int = 0
    pongs_received: int = 0
    server_states: int = 0
    clear_consoles: int = 0
    remote_logs: list[str] = field(default_factory=list)
    last_frame: AsciiFrame | None = None


def _auth_reason(flags: int) -> str:
    names = [f.name.lower().replace("_", " ") for f in AuthFailure if f & flags and f.name]
    return ", ".join(names) if names else "no reason given"


class ClientSession:
    def __init__(self, options: ClientOptions, display: FrameDisplay) -> None:
        self.options = options
        self.display = display
        self.stats = ClientStats()
        security = ClientSecurity(
            encrypt=options.encrypt,
            password=options.password,
            server_key=options.server_key,
            identity=options.identity,
            key_variant=options.key_variant,
        )
        self.conn = ClientConnection(security, options.target.kind)
        self._transport: TcpTransport | WsTransport | None = None
        self._send_lock = asyncio.Lock()
        self._opened = asyncio.Event()
        self._done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._last_rx = time.monotonic()
        self._opened_at = 0.0
        self._first_frame_at = 0.0
        self._early = b""  # first bytes from the server, to recognise the SERVER_FULL text line
        # A slow server (the C debug build needs seconds for its first frame) gets as long as --timeout.
        self._first_frame_timeout_s = max(SNAPSHOT_FIRST_FRAME_TIMEOUT_S, options.silence_timeout_s)
        self._source = self._make_source()
        self._resize_tasks: set[asyncio.Task] = set()

    # -- video source -------------------------------------------------------------------------------
    def _make_source(self) -> Callable[[], np.ndarray]:
        if self.options.image_file:
            still = load_image(self.options.image_file)
            return lambda: still
        pattern = TestPattern()
        return pattern.next_frame

    # -- plumbing -------------------------------------------------------------------------------------
    def _finish(self, code: int, message: str = "", lost: bool = False) -> None:
        if not self._done.done():
            if message:
                self._done.set_exception(ClientError(message, code, lost))
            else:
                self._done.set_result(code)

    async def _flush(self) -> None:
        """Send whatever the core queued, in order; one writer at a time so packets never interleave."""
        async with self._send_lock:
            for packet in self.conn.data_to_send():
                await self._transport.send(packet)

    async def _send(self, ptype: int, payload: bytes = b"") -> None:
        self.conn.send(ptype, payload)
        await self._flush()

    # -- tasks ----------------------------------------------------------------------------------------
    async def _receive_loop(self) -> None:
        feed = self.conn.receive_message if self.options.target.kind == "ws" else self.conn.receive_data
        while True:
            data = await self._transport.recv()
            if data is None:
                reason = getattr(self._transport, "close_reason", "") or "server closed the connection"
                if self.conn.state == ConnectionState.HANDSHAKE:
                    raise ClientError(f"connection closed during the handshake ({reason})")
                raise ClientError(f"connection lost: {reason}", lost=True)
            self._last_rx = time.monotonic()
            if not self._opened.is_set() and len(self._early) < SERVER_FULL_PREFIX_LEN:
                self._early += data[:SERVER_FULL_PREFIX_LEN]
            try:
                events = feed(data)
            except ProtocolError as exc:
                if self._early.startswith(SERVER_FULL_PREFIX):
                    # A full server (C or ours) writes one text line instead of a packet, then closes.
                    line = self._early.split(b"\n", 1)[0].decode("ascii", "replace")
                    raise ClientError(f"server is full ({line})") from exc
                phase = "handshake failed" if not self._opened.is_set() else "protocol error"
                if self._opened.is_set():
                    # Tell the server why we leave (ERROR_MESSAGE 44, encrypted when the session is), as it does.
                    self.conn.fail(exc.reason)
                    await self._flush_quietly()
                # After the handshake the C client treats any receive error as a lost connection (and
                # reconnects); the c41 server can corrupt its own stream (two writers), so we do the same.
                raise ClientError(f"{phase}: {exc.reason}", lost=self._opened.is_set()) from exc
            for event in events:
                await self._handle_event(event)
            await self._flush()

    async def _flush_quietly(self) -> None:
        try:
            await self._flush()
        except (TransportClosed, ProtocolError):
            pass

    async def _handle_event(self, event: object) -> None:
        if isinstance(event, HandshakeComplete):
            await self._on_open(event.encrypted, event.key_variant)
        elif isinstance(event, AuthRejected):
            raise ClientError(f"server rejected authentication: {_auth_reason(event.reason_flags)}")
        elif isinstance(event, PacketReceived):
            try:
                await self._handle_packet(event.packet.type, event.packet.payload)
            except ProtocolError as exc:
                # Like the c41 client: a packet it cannot parse is logged and skipped, the session goes on.
                self.stats.bad_packets += 1
                log.warning("ignored malformed packet type %d: %s", event.packet.type, exc.reason)

    async def _on_open(self, encrypted: bool, key_variant: str | None) -> None:
        if self._opened.is_set():
            return
        self._opened_at = time.monotonic()
        self.stats.handshake_s = self._opened_at - self._started_at
        self.stats.encrypted = encrypted
        self.stats.key_variant = key_variant
        log.info(
            "connected to %s (%s, %s%s) in %.1f ms",
            self.options.target,
            self._transport.kind,
            "encrypted" if encrypted else "plaintext",
            f", key variant {key_variant}" if key_variant else "",
            self.stats.handshake_s * 1000,
        )
        # The C server wants CLIENT_CAPABILITIES as the very first packet after the handshake.
        caps = ClientCapabilities(**self.options.capabilities_fields())
        self.conn.send(PacketType.CLIENT_CAPABILITIES, caps.encode())
        if self.options.send_video:
            self.conn.send(PacketType.STREAM_START, StreamFlags(StreamType.VIDEO).encode())
        self._opened.set()

    async def _handle_packet(self, ptype: int, payload: bytes) -> None:
        if ptype == PacketType.ASCII_FRAME:
            frame = AsciiFrame.decode(payload)
            self.stats.frames_received += 1
            if self.stats.last_frame is None:
                self._first_frame_at = time.monotonic()
            self.stats.last_frame = frame
            if not self.options.snapshot:
                self.display.offer(frame.text.decode("utf-8", "replace"), time.monotonic())
        elif ptype == PacketType.PING:
            self.conn.send(PacketType.PONG)
        elif ptype == PacketType.PONG:
            self.stats.pongs_received += 1
        elif ptype == PacketType.SERVER_STATE:
            state = ServerState.decode(payload)
            self.stats.server_states += 1
            self.display.server_state(state.active)
            log.debug("server state: %d connected, %d active", state.connected, state.active)
        elif ptype == PacketType.CLEAR_CONSOLE:
            self.stats.clear_consoles += 1
            self.display.request_clear()
        elif ptype == PacketType.ERROR_MESSAGE:
            err = ErrorMessage.decode(payload)
            raise ClientError(f"server error {err.code}: {err.message}")
        elif ptype == PacketType.REMOTE_LOG:
            rlog = RemoteLog.decode(payload)
            self.stats.remote_logs.append(rlog.message)
            log.log(_REMOTE_LEVELS[rlog.level], "[server] %s", rlog.message)  # decode() checked level 0..5
        elif ptype in (PacketType.AUDIO_OPUS_BATCH, PacketType.AUDIO_BATCH):
            # No audio output here; count it so tests and --log-level debug can see audio arrives.
            self.stats.audio_batches += 1
        else:
            log.debug("ignored packet type %d (%d bytes)", ptype, len(payload))

    def _on_resize(self) -> None:
        """SIGWINCH: if the terminal size changed, tell the server (the C client re-sends CLIENT_CAPABILITIES)."""
        columns, rows = shutil.get_terminal_size((self.options.width, self.options.height))
        if (columns, rows) == (self.options.width, self.options.height) or not self._opened.is_set():
            return
        self.options.width, self.options.height = columns, rows
        log.debug("terminal resized to %dx%d", columns, rows)
        caps = ClientCapabilities(**self.options.capabilities_fields())
        self.conn.send(PacketType.CLIENT_CAPABILITIES, caps.encode())
        self.display.request_clear()
        task = asyncio.create_task(self._flush_quietly())
        self._resize_tasks.add(task)
        task.add_done_callback(self._resize_tasks.discard)

    async def _video_loop(self) -> None:
        await self._opened.wait()
        interval = 1.0 / self.options.fps
        next_at = time.monotonic()
        while True:
            pixels: np.ndarray = self._source()
            height, width = pixels.shape[:2]
            frame = ImageFrame(
                width=width,
                height=height,
                pixel_format=PIXEL_FORMAT_RGB24,
                compressed_size=0,
                checksum=0,
                timestamp=0,
                pixels=pixels.tobytes(),
            )
            await self._send(PacketType.IMAGE_FRAME, frame.encode())
            self.stats.frames_sent += 1
            log_every(
                log,
                logging.DEBUG,
                5.0,
                "[CAPTURE] sent frame %d %dx%d (%d bytes) via %s",
                self.stats.frames_sent,
                width,
                height,
                width * height * 3,
                self._transport.kind,
            )
            next_at += interval
            delay = next_at - time.monotonic()
            if delay < -interval:
                next_at = time.monotonic()  # fell behind: do not burst to catch up
            await asyncio.sleep(max(0.0, delay))

    async def _ping_loop(self) -> None:
        await self._opened.wait()
        while True:
            await asyncio.sleep(PING_INTERVAL_S)
            await self._send(PacketType.PING)
            self.stats.pings_sent += 1

    async def _watchdog(self) -> None:
        """Silence and snapshot timing, checked ten times a second."""
        while True:
            await asyncio.sleep(0.1)
            now = time.monotonic()
            if now - self._last_rx > self.options.silence_timeout_s:
                phase = "handshake" if not self._opened.is_set() else "session"
                raise ClientError(
                    f"no data from server for {self.options.silence_timeout_s:g}s during the {phase}; giving up",
                    lost=phase == "session",
                )
            if self.options.snapshot and self._opened.is_set():
                # Like the C client, the delay runs from the first frame; then the newest frame is printed.
                if self.stats.last_frame is not None:
                    if now - self._first_frame_at >= self.options.snapshot_delay_s:
                        self.display.show(self.stats.last_frame.text.decode("utf-8", "replace"))
                        self._finish(EXIT_OK)
                        return
                elif now - self._opened_at >= self._first_frame_timeout_s:
                    raise ClientError(
                        f"no ASCII frame received within {self._first_frame_timeout_s:g}s; nothing to snapshot"
                    )

    # -- entry ----------------------------------------------------------------------------------------
    async def run(self) -> int:
        self._started_at = time.monotonic()
        self._transport = await open_transport(self.options.target)
        self._last_rx = time.monotonic()
        log.debug("transport open to %s (%s)", self._transport.peer, self._transport.kind)
        tasks: list[asyncio.Task] = []
        try:
            self.conn.start()
            await self._flush()
            if self.conn.state == ConnectionState.OPEN and not self._opened.is_set():
                # --no-encrypt over TCP: no handshake at all, the session is open at once.
                await self._on_open(False, None)
                await self._flush()
            tasks = [
                asyncio.create_task(self._receive_loop(), name="receive"),
                asyncio.create_task(self._ping_loop(), name="ping"),
                asyncio.create_task(self._watchdog(), name="watchdog"),
            ]
            if self.options.send_video:
                tasks.append(asyncio.create_task(self._video_loop(), name="video"))
            for task in tasks:
                task.add_done_callback(self._task_done)
            if self.options.follow_terminal:
                asyncio.get_running_loop().add_signal_handler(signal.SIGWINCH, self._on_resize)
            return await self._done
        finally:
            if self.options.follow_terminal:
                asyncio.get_running_loop().remove_signal_handler(signal.SIGWINCH)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._transport.close()

    def _task_done(self, task: asyncio.Task) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            return
        if isinstance(exc, ClientError):
            self._finish(exc.exit_code, exc.message, exc.lost)
        elif isinstance(exc, TransportClosed):
            self._finish(EXIT_FAILURE, f"connection lost: {exc.reason}", self._opened.is_set())
        elif isinstance(exc, ProtocolError):
            self._finish(EXIT_FAILURE, f"protocol error: {exc.reason}")
        else:
            if not self._done.done():
                self._done.set_exception(exc)


async def run_client(
    options: ClientOptions, display: FrameDisplay, reconnect: bool = False, reconnect_delay_s: float = RECONNECT_DELAY_S
) -> tuple[int, ClientStats]:
    """Connect, run until snapshot/error/cancel; return the exit code and what was counted.

    With ``reconnect`` an open session that dies (EOF, silence, send failure) is started again, with a
    fresh handshake, after ``reconnect_delay_s``, as the C client does; refusals and errors still end it.
    """
    retrying = False  # after a lost session, failed connects are retried too (the server may be restarting)
    while True:
        try:
            session = ClientSession(options, display)
        except ValueError as exc:
            raise ClientError(str(exc), 2) from exc
        try:
            code = await session.run()
        except (TransportClosed, ClientError) as exc:
            connect_failed = isinstance(exc, TransportClosed)
            message = exc.reason if connect_failed else exc.message
            lost = not connect_failed and exc.lost
            if not (reconnect and not options.snapshot and (lost or (retrying and connect_failed))):
                if connect_failed:
                    raise ClientError(message) from exc
                raise
            retrying = True
            log.warning("%s; reconnecting in %gs", message, reconnect_delay_s)
            display.request_clear()
            await asyncio.sleep(reconnect_delay_s)
            continue
        return code, session.stats
