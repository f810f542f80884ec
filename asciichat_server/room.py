"""The room: client slots, one session per connection, video/audio fan-out, keepalives.

`Room.serve(link)` runs one client's whole life on any transport and frees its slot exactly once,
whatever ends it (EOF, reset, timeout, protocol violation, CLIENT_LEAVE, shutdown).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from asciichat_server.admission import ConnectRateLimiter, peer_host
from asciichat_server.config import ServerConfig
from asciichat_server.link import Link
from asciichat_server.log import log_every
from asciichat_server.media import AudioMixer, Compositor, H265DecodeError, H265Decoder, RenderSpec, VideoSource
from asciichat_server.metrics import Metrics
from asciichat_server.protocol.connection import ConnectionState, ServerConnection, ServerSecurity
from asciichat_server.protocol.constants import (
    HEADER_SIZE,
    MAX_ENCRYPTED_PLAINTEXT,
    PacketType,
    StreamType,
    packet_type_name,
)
from asciichat_server.protocol.errors import ProtocolError
from asciichat_server.protocol.events import AuthRejected, HandshakeComplete, PacketReceived
from asciichat_server.protocol.payloads import (
    AsciiFrame,
    AudioBatch,
    AudioOpusBatch,
    ClientCapabilities,
    ClientJoin,
    ErrorMessage,
    ImageFrame,
    ImageFrameH265,
    RemoteLog,
    ServerState,
    StreamFlags,
)

__all__ = ["SERVER_FULL_LINE", "ClientSession", "Room"]

_log = logging.getLogger(__name__)

# c41 add_client writes this raw line (not an ACIP packet) to a TCP client when every slot is taken.
SERVER_FULL_LINE = b"SERVER_FULL: Maximum client limit reached\n"
# Longest stretch of rendering before the tick loop yields to the event loop (PING must be answered at once).
RENDER_SLICE_S = 0.01
# The C server draws at most 9 videos (create_multi_source_composite).
MAX_VIDEO_SOURCES = 9
# How long a final flush (ERROR_MESSAGE, AUTH_FAILED, SERVER_FULL) may take before we just close.
FINAL_FLUSH_S = 1.0
# The very first bytes must come soon: the TCP client speaks first and at once (ACIP 3.1).
FIRST_BYTES_TIMEOUT_S = 10.0
# Audio batches we keep queued for a slow receiver; older ones are dropped (stale audio is useless).
AUDIO_QUEUE_LIMIT = 8
# Audio mixing stops when nobody has sent audio for this long.
AUDIO_IDLE_S = 1.0
# Opus batches we send: 48 kHz, 20 ms frames (ACIP 5.4.1).
OPUS_SAMPLE_RATE = 48000
OPUS_FRAME_MS = 20
# The C client batches at most 8 frames per packet (MAX_BATCH_FRAMES); we send no more either.
OPUS_FRAMES_PER_BATCH = 8


class _Stop(Exception):
    """Ends a session's receive loop with a reason (not an error)."""

    def __init__(self, reason: str, flush: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.flush = flush


@dataclass
class _Video:
    item: bytes
    tiles: int


class ClientSession:
    """One connected client: its protocol state, send lanes and latest media."""

    def __init__(self, client_id: int, slot: int, link: Link, conn: ServerConnection, now: float) -> None:
        self.id = client_id
        self.slot = slot
        self.link = link
        self.host = peer_host(link.peer)
        self.conn = conn
        self.connected_at = now
        self.last_recv = now
        self.last_activity = now
        # Lifecycle flags: joined after CLIENT_CAPABILITIES; removed once, in Room._remove.
        self.joined = False
        self.handshake_done = False
        self.removed = False
        self.left = False
        self.stop_reason: str | None = None
        self.final_flush = False
        self.display_name = f"Client{client_id}"
        self.caps: ClientCapabilities | None = None
        self.spec: RenderSpec | None = None
        self.frame_interval = 1 / 60
        self.next_frame_at = 0.0
        self.rendered_key: tuple[Any, ...] | None = None
        self.last_sent_tiles = 0
        self.streams = 0
        self.video: VideoSource | None = None
        self.video_seq = 0
        self.video_at = 0.0
        self.h265: H265Decoder | None = None
        # Send lanes, drained by the single writer task: control packets in order, the newest audio
        # batches, and only the newest video frame (a slow receiver never accumulates video).
        self.control: collections.deque[tuple[int, bytes]] = collections.deque()
        self.audio: collections.deque[bytes] = collections.deque(maxlen=AUDIO_QUEUE_LIMIT)
        self.video_out: _Video | None = None
        self.wakeup = asyncio.Event()
        # The receive deadline in force while the session waits for data; stop() pulls it to "now".
        self.recv_deadline: asyncio.Timeout | None = None
        self.writer_task: asyncio.Task[None] | None = None

    @property
    def open(self) -> bool:
        return not self.removed and self.stop_reason is None and self.conn.state is ConnectionState.OPEN

    @property
    def sending_video(self) -> bool:
        return self.video is not None

    def stop(self, reason: str, flush: bool = False) -> None:
        """Ask the session to end (from any task); the first reason wins."""
        if self.stop_reason is None:
            self.stop_reason = reason
            self.final_flush = flush
        deadline = self.recv_deadline
        if deadline is not None:
            # Wake a session parked in recv(): its timeout fires at once and the loop sees stop_reason.
            with contextlib.suppress(RuntimeError):
                deadline.reschedule(asyncio.get_running_loop().time())
        self.wakeup.set()


class Room:
    """All clients of one server, whatever their transport."""

    def __init__(
        self,
        config: ServerConfig,
        security: ServerSecurity,
        metrics: Metrics | None = None,
        compositor: Compositor | None = None,
        mixer: AudioMixer | None = None,
    ) -> None:
        self.config = config
        self.security = security
        self.metrics = metrics or Metrics()
        self.metrics.slots_max = config.max_clients
        self.compositor = compositor or Compositor()
        self.mixer = mixer if mixer is not None else AudioMixer()
        # --ws-plaintext: WS clients that cannot handshake (the c41 native WS client) never get a key
        # exchange offered; config validation forbids it together with a password or allow-list.
        self._ws_security = ServerSecurity(encrypt=False) if config.ws_plaintext else security
        self.clients: dict[int, ClientSession] = {}
        self._free_slots = list(range(config.max_clients))
        self._connect_rate = ConnectRateLimiter(config.max_connect_rate) if config.max_connect_rate > 0 else None
        self._ids = itertools.count(1)
        self._closing = False
        self._video_version = 0
        self._video_pulse = asyncio.Event()
        self._last_audio_in = 0.0
        self._all_gone = asyncio.Event()
        self._all_gone.set()
        self._ticker: asyncio.Task[None] | None = None
        self._audio_task: asyncio.Task[None] | None = None

    # --- public state -------------------------------------------------------------------------

    @property
    def client_count(self) -> int:
        """Slots in use (connected clients, joined or still handshaking)."""
        return len(self.clients)

    @property
    def slots_free(self) -> int:
        return len(self._free_slots)

    @property
    def joined_count(self) -> int:
        return sum(1 for c in self.clients.values() if c.joined)

    @property
    def video_count(self) -> int:
        return sum(1 for c in self.clients.values() if c.joined and c.sending_video)

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the room-wide tick (video fan-out, keepalives) and audio loop."""
        if self._ticker is None:
            self._ticker = asyncio.create_task(self._guarded(self._tick_loop, "ticker"), name="room-ticker")
            self._audio_task = asyncio.create_task(self._guarded(self._audio_loop, "audio"), name="room-audio")

    async def shutdown(self, timeout_s: float = 1.2) -> None:
        """Close every client and wait until each session has run its cleanup, all within ``timeout_s``."""
        self._closing = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        clients = list(self.clients.values())
        for client in clients:
            client.stop("shutdown")
        if clients:
            # Closing the links wakes any recv() parked in a transport; all at once, bounded.
            closes = [asyncio.ensure_future(c.link.close("shutdown")) for c in clients]
            _done, slow = await asyncio.wait(closes, timeout=timeout_s / 2)
            for task in slow:
                task.cancel()
            for task in closes:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        try:
            await asyncio.wait_for(self._all_gone.wait(), max(0.05, deadline - loop.time()))
        except TimeoutError:
            _log.warning("shutdown: %d client(s) still cleaning up after %.1fs", len(self.clients), timeout_s)
        for task in (self._ticker, self._audio_task):
            if task is not None:
                task.cancel()
        for task in (self._ticker, self._audio_task):
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._ticker = self._audio_task = None

    async def _guarded(self, loop_fn: Callable[[], Any], name: str) -> None:
        # Room loops must never die silently (or leave "Task exception was never retrieved").
        while True:
            try:
                await loop_fn()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                _log.exception("room %s loop failed; restarting it", name)
                await asyncio.sleep(0.1)

    # --- one client's life --------------------------------------------------------------------

    async def serve(self, link: Link) -> None:
        """Run one connection from accept to close. Never raises (except cancellation)."""
        tag = "[TCP_CONNECT]" if link.kind == "tcp" else None
        if self._closing:
            await _quiet_close(link, "shutdown")
            return
        if self._ticker is None:
            self.start()  # a Room used without AsciiChatServer still gets its frame/keepalive loops
        self.metrics.connections_total += 1
        loop = asyncio.get_running_loop()
        refusal = self._refusal(peer_host(link.peer), loop.time())
        if refusal is not None:
            log_every(_log, logging.WARNING, 1.0, "%s %s rejected: %s", tag or "[CONNECT]", link.peer, refusal)
            await _quiet_close(link, refusal)
            return
        if not self._free_slots:
            self.metrics.rejected_full += 1
            log_every(
                _log,
                logging.WARNING,
                1.0,
                "%s %s rejected: server full (%d/%d)",
                tag or "[CONNECT]",
                link.peer,
                self.config.max_clients,
                self.config.max_clients,
            )
            if link.kind == "tcp":
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(link.send(SERVER_FULL_LINE), FINAL_FLUSH_S)
            await _quiet_close(link, "server full")
            return

        slot = self._free_slots.pop(0)
        if link.kind == "ws":
            conn = ServerConnection(self._ws_security, "ws")
        else:
            conn = ServerConnection(self.security, "tcp")
        client = ClientSession(next(self._ids), slot, link, conn, loop.time())
        with contextlib.suppress(Exception):
            link.client_id = client.id  # type: ignore[attr-defined]  # shown in the transport's own logs
        self.clients[client.id] = client
        self._all_gone.clear()
        self.metrics.connections_active += 1
        self.metrics.slots_used = self.client_count
        if tag:
            # DEBUG like [WS_CONNECT]; one line per connection (no rate limit) so `diag logs` can pair
            # every connect with its disconnect and its reason.
            _log.debug(
                "%s id=%d peer=%s slot=%d clients=%d/%d",
                tag,
                client.id,
                link.peer,
                slot,
                self.client_count,
                self.config.max_clients,
            )
        reason = "eof"
        try:
            client.writer_task = asyncio.create_task(self._writer(client), name=f"writer-{client.id}")
            reason = await self._session(client)
        except asyncio.CancelledError:
            reason = "cancelled"
            raise
        except Exception as exc:  # a bug in our own handling: log it, keep the server alive
            reason = f"internal error: {type(exc).__name__}"
            _log.exception("client %d: unexpected error", client.id)
        finally:
            await self._remove(client, client.stop_reason or reason)

    def _refusal(self, host: str, now: float) -> str | None:
        """Why a new connection from ``host`` is refused by the per-address limits, or None."""
        pending_limit = self.config.max_pending_per_ip
        if pending_limit > 0:
            pending = sum(1 for c in self.clients.values() if c.host == host and not c.handshake_done)
            if pending >= pending_limit:
                self.metrics.rejected_pending += 1
                return f"too many handshakes: {pending} from {host} still open (--max-pending-per-ip {pending_limit})"
        if self._connect_rate is not None and not self._connect_rate.allow(host, now):
            self.metrics.rejected_rate += 1
            wait = self._connect_rate.retry_after(host, now)
            return (
                f"rate limited: {host} over {self.config.max_connect_rate:g} connections/s "
                f"(--max-connect-rate), next in {wait:.2f}s"
            )
        return None

    async def _session(self, client: ClientSession) -> str:
        """Feed received data to the protocol; return why the session ended."""
        conn, link = client.conn, client.link
        loop = asyncio.get_running_loop()
        handshake_deadline = client.connected_at + self.config.handshake_timeout_s
        first_deadline = client.connected_at + min(FIRST_BYTES_TIMEOUT_S, self.config.handshake_timeout_s)
        got_bytes = False
        # Browsers never ping and a receive-only browser sends nothing after CLIENT_CAPABILITIES
        # (ACIP 3.8): on WS the transport's ping/pong heartbeat decides liveness, not silence.
        idle_s: float | None = self.config.idle_timeout_s
        if link.kind == "ws" and getattr(self.config, "ws_heartbeat_s", 0) > 0:
            idle_s = None
        try:
            conn.start()
            client.wakeup.set()
            while client.stop_reason is None:
                now = loop.time()
                if conn.state is ConnectionState.HANDSHAKE:
                    deadline = handshake_deadline if got_bytes else first_deadline
                    wait = deadline - now
                    timeout_reason = "handshake timeout"
                else:
                    wait = None if idle_s is None else client.last_recv + idle_s - now
                    timeout_reason = "timeout"
                if wait is not None and wait <= 0:
                    self.metrics.timeouts += 1
                    if not client.handshake_done:
                        self.metrics.handshakes_failed += 1
                    return timeout_reason
                try:
                    async with asyncio.timeout(wait) as recv_deadline:
                        client.recv_deadline = recv_deadline
                        data = await link.recv()
                except TimeoutError:
                    continue  # deadline passed or stop requested: the loop head decides
                finally:
                    client.recv_deadline = None
                if data is None:
                    if not client.handshake_done:
                        self.metrics.handshakes_failed += 1
                    return "eof"
                got_bytes = True
                client.last_recv = loop.time()
                self.metrics.bytes_in += len(data)
                try:
                    events = conn.receive_data(data) if link.kind == "tcp" else conn.receive_message(data)
                    for event in events:
                        self._on_event(client, event)
                except ProtocolError as exc:
                    return self._violation(client, exc)
                except _Stop as stop:
                    client.stop(stop.reason, flush=stop.flush)
                client.wakeup.set()
            return client.stop_reason or "eof"
        finally:
            if client.final_flush:
                await self._final_flush(client)

    def _violation(self, client: ClientSession, exc: ProtocolError) -> str:
        """Queue ERROR_MESSAGE(code, reason) (encrypted when the session is), then end the session."""
        self.metrics.protocol_errors += 1
        if not client.handshake_done:
            self.metrics.handshakes_failed += 1
        reason = f"protocol error: {exc.reason}"
        log_every(
            _log,
            logging.WARNING,
            1.0,
            "client %d (%s): protocol violation: %s (error %d)",
            client.id,
            client.link.peer,
            exc.reason,
            exc.error_code,
        )
        with contextlib.suppress(Exception):
            client.conn.fail(exc.reason, exc.error_code)
        client.stop(reason, flush=True)
        return reason

    async def _final_flush(self, client: ClientSession) -> None:
        """Let the writer send what the protocol has queued (ERROR_MESSAGE / AUTH_FAILED), bounded."""
        client.wakeup.set()
        task = client.writer_task
        if task is not None and not task.done():
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError, Exception):
                await asyncio.wait_for(asyncio.shield(task), FINAL_FLUSH_S)

    async def _remove(self, client: ClientSession, reason: str) -> None:
        """The single cleanup path: free the slot once, stop tasks, close the link, tell the others."""
        if client.removed:
            return
        client.removed = True
        was_joined, had_video = client.joined, client.sending_video
        client.stop(reason)
        self.clients.pop(client.id, None)
        self._free_slots.append(client.slot)
        self._free_slots.sort()
        self.metrics.connections_active -= 1
        self.metrics.slots_used = self.client_count
        with contextlib.suppress(Exception):
            self.compositor.forget(client.id)
        with contextlib.suppress(Exception):
            self.mixer.remove(client.id)
        if client.h265 is not None:
            client.h265.close()
            client.h265 = None
        if had_video:
            self._video_changed()
        task = client.writer_task
        if task is not None and not task.done():
            task.cancel()
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await _quiet_close(client.link, reason)
        if client.link.kind == "tcp":
            _log.debug(
                "[TCP_DISCONNECT] id=%d peer=%s cleanup=done active=%s reason=%s duration=%.2fs clients=%d/%d",
                client.id,
                client.link.peer,
                "true" if was_joined and not client.left else "false",
                reason,
                asyncio.get_running_loop().time() - client.connected_at,
                self.client_count,
                self.config.max_clients,
            )
        if was_joined:
            self._broadcast_state()
        if not self.clients:
            self._all_gone.set()

    # --- protocol events ----------------------------------------------------------------------

    def _on_event(self, client: ClientSession, event: object) -> None:
        if isinstance(event, PacketReceived):
            self._on_packet(client, event.packet.type, event.packet.payload)
        elif isinstance(event, HandshakeComplete):
            client.handshake_done = True
            self.metrics.handshakes_ok += 1
            _log.debug(
                "client %d: handshake complete (encrypted=%s, variant=%s, identity=%s)",
                client.id,
                event.encrypted,
                event.key_variant,
                event.client_identity.hex() if event.client_identity else "-",
            )
        elif isinstance(event, AuthRejected):
            self.metrics.handshakes_failed += 1
            _log.info(
                "client %d (%s): authentication failed (flags 0x%02x)", client.id, client.link.peer, event.reason_flags
            )
            raise _Stop("auth failed", flush=True)

    def _on_packet(self, client: ClientSession, ptype: int, payload: bytes) -> None:
        if ptype == PacketType.PING:
            self._queue(client, PacketType.PONG)
        elif ptype == PacketType.PONG:
            pass
        elif ptype == PacketType.IMAGE_FRAME:
            self._on_image_frame(client, payload)
        elif ptype == PacketType.CLIENT_CAPABILITIES:
            self._on_capabilities(client, ClientCapabilities.decode(payload))
        elif ptype == PacketType.STREAM_START:
            bits = _stream_bits(StreamFlags.decode(payload))
            client.streams |= bits
        elif ptype == PacketType.STREAM_STOP:
            bits = _stream_bits(StreamFlags.decode(payload))
            client.streams &= ~bits
            if bits & StreamType.VIDEO and client.video is not None:
                client.video = None
                self._video_changed()
                self._broadcast_state()
        elif ptype == PacketType.AUDIO_OPUS_BATCH:
            self._on_audio(client, payload)
        elif ptype == PacketType.AUDIO_BATCH:
            self._on_pcm_audio(client, payload)
        elif ptype == PacketType.CLIENT_LEAVE:
            client.left = True
            raise _Stop("client leave")
        elif ptype == PacketType.CLIENT_JOIN:
            join = ClientJoin.decode(payload)
            name = getattr(join, "display_name", "") or ""
            if isinstance(name, bytes):
                name = name.decode("utf-8", "replace")
            if name:
                client.display_name = name
        elif ptype == PacketType.REMOTE_LOG:
            entry = RemoteLog.decode(payload)
            _log.debug("client %d remote log: %s", client.id, entry.message)
        elif ptype == PacketType.ERROR_MESSAGE:
            error = ErrorMessage.decode(payload)
            _log.info("client %d reports error %d: %s", client.id, error.code, error.message)
        elif ptype == PacketType.IMAGE_FRAME_H265:
            self._on_h265_frame(client, payload)
        else:
            # c41 drops a client for an unknown type; being lenient keeps odd-but-harmless clients in.
            log_every(_log, logging.DEBUG, 10.0, "client %d: ignoring %s", client.id, packet_type_name(ptype))

    def _on_capabilities(self, client: ClientSession, caps: ClientCapabilities) -> None:
        try:
            spec = RenderSpec.from_capabilities(caps)
        except ValueError as exc:
            raise ProtocolError(f"CLIENT_CAPABILITIES: {exc}") from None
        old_spec = client.spec
        client.caps = caps
        client.spec = spec
        if old_spec is not None and (old_spec.cols, old_spec.rows) != (spec.cols, spec.rows):
            client.last_sent_tiles = -1  # terminal resized: clear before the re-laid-out frame
        fps = int(getattr(caps, "desired_fps", 60) or 60)
        client.frame_interval = 1 / max(1, min(fps, self.config.max_fps))
        client.rendered_key = None  # a resize re-renders at once
        if not client.joined:
            client.joined = True
            self.mixer.add_listener(client.id)
            _log.debug("client %d joined: %dx%d fps=%d", client.id, spec.cols, spec.rows, fps)
            self._broadcast_state()

    def _on_image_frame(self, client: ClientSession, payload: bytes) -> None:
        frame = ImageFrame.decode(payload)
        self.metrics.frames_in += 1
        if not (1 <= frame.width <= 8192 and 1 <= frame.height <= 8192):
            raise ProtocolError(f"IMAGE_FRAME size {frame.width}x{frame.height} outside 1..8192")
        try:
            source = VideoSource.from_image_frame(
                client.id, client.video_seq + 1, frame.width, frame.height, frame.pixels
            )
        except ValueError as exc:
            # c41 stores such frames but never renders them; we drop them with a note.
            log_every(_log, logging.INFO, 10.0, "client %d: unusable IMAGE_FRAME: %s", client.id, exc)
            return
        self._store_video(client, source)

    def _on_h265_frame(self, client: ClientSession, payload: bytes) -> None:
        frame = ImageFrameH265.decode(payload)
        self.metrics.frames_in += 1
        if client.h265 is None:
            client.h265 = H265Decoder()
        try:
            pixels = client.h265.decode(frame.bitstream, frame.width, frame.height)
        except H265DecodeError as exc:
            raise ProtocolError(str(exc)) from None
        if pixels is not None:
            self._store_video(client, VideoSource(client.id, client.video_seq + 1, pixels))

    def _store_video(self, client: ClientSession, source: VideoSource) -> None:
        first = client.video is None
        client.video_seq = source.seq
        client.video = source
        client.video_at = asyncio.get_running_loop().time()
        client.streams |= StreamType.VIDEO
        self._video_changed()
        if first:
            self._broadcast_state()

    def _on_pcm_audio(self, client: ClientSession, payload: bytes) -> None:
        if not client.streams & StreamType.AUDIO:
            raise ProtocolError("AUDIO_BATCH before STREAM_START(AUDIO)")
        batch = AudioBatch.decode(payload)
        if batch.sample_rate != OPUS_SAMPLE_RATE or batch.channels != 1:
            # The mixer runs at 48 kHz mono; nobody sends anything else (AUDIO_BATCH itself is legacy).
            log_every(
                _log,
                logging.INFO,
                10.0,
                "client %d: AUDIO_BATCH %d Hz x%d ignored",
                client.id,
                batch.sample_rate,
                batch.channels,
            )
            return
        self.mixer.push_pcm(client.id, np.asarray(batch.to_floats(), dtype=np.float32))
        self._last_audio_in = asyncio.get_running_loop().time()

    def _on_audio(self, client: ClientSession, payload: bytes) -> None:
        if not client.streams & StreamType.AUDIO:
            raise ProtocolError("AUDIO_OPUS_BATCH before STREAM_START(AUDIO)")
        batch = AudioOpusBatch.decode(payload)
        self.mixer.push_opus(client.id, list(batch.frames))
        self._last_audio_in = asyncio.get_running_loop().time()

    # --- sending ------------------------------------------------------------------------------

    def _queue(self, client: ClientSession, ptype: int, payload: bytes = b"") -> None:
        """Queue one control packet; never for a removed client."""
        if client.removed or client.stop_reason is not None:
            return
        if len(client.control) >= self.config.send_queue_limit:
            client.stop("send queue overflow")
            return
        client.control.append((int(ptype), payload))
        client.last_activity = asyncio.get_running_loop().time()
        client.wakeup.set()

    def _server_state(self) -> bytes:
        return ServerState(connected=self.joined_count, active=self.video_count).encode()

    def _broadcast_state(self) -> None:
        payload = self._server_state()
        for client in list(self.clients.values()):
            if client.joined:
                self._queue(client, PacketType.SERVER_STATE, payload)

    async def _writer(self, client: ClientSession) -> None:
        """The only task that touches this connection's send side (one writer per connection)."""
        conn, link = client.conn, client.link
        loop = asyncio.get_running_loop()
        try:
            while True:
                await client.wakeup.wait()
                client.wakeup.clear()
                if client.removed:
                    return
                if client.stop_reason is None and conn.state is ConnectionState.OPEN:
                    while client.control:
                        ptype, payload = client.control.popleft()
                        conn.send(ptype, payload)
                    while client.audio:
                        conn.send(PacketType.AUDIO_OPUS_BATCH, client.audio.popleft())
                    video, client.video_out = client.video_out, None
                    if video is not None:
                        if video.tiles != client.last_sent_tiles:
                            conn.send(PacketType.CLEAR_CONSOLE)
                            client.last_sent_tiles = video.tiles
                        conn.send(PacketType.ASCII_FRAME, video.item)
                        self.metrics.frames_out += 1
                out = conn.data_to_send()
                if out:
                    if link.kind == "tcp":
                        out = [b"".join(out)]  # one write for a burst; TCP has no message boundaries
                    for data in out:
                        await link.send(data)
                        self.metrics.bytes_out += len(data)
                    client.last_activity = loop.time()
                if client.stop_reason is not None:
                    return  # what the protocol queued last (ERROR_MESSAGE, AUTH_FAILED) went out above
        except asyncio.CancelledError:
            raise
        except (ConnectionError, OSError) as exc:
            client.stop(f"send failed: {exc}" if str(exc) else "send failed")
        except ProtocolError as exc:
            client.stop(f"protocol error: {exc.reason}")
        except Exception:
            _log.exception("client %d: writer failed", client.id)
            client.stop("internal error: writer")

    # --- room loops ---------------------------------------------------------------------------

    def _video_changed(self) -> None:
        self._video_version += 1
        self._video_pulse.set()
        self._video_pulse.clear()

    def _video_sources(self) -> list[VideoSource]:
        """Newest frame of every sender, in slot order, at most 9 (like c41, kept until it stops or leaves)."""
        senders = sorted(
            (c for c in self.clients.values() if c.video is not None and not c.removed), key=lambda c: c.slot
        )
        return [c.video for c in senders[:MAX_VIDEO_SOURCES] if c.video is not None]

    def _frame_for(self, client: ClientSession, sources: list[VideoSource]) -> bytes | None:
        """ASCII_FRAME payload for one receiver, or None when it cannot be sent."""
        assert client.spec is not None
        text = self.compositor.render(sources, client.spec)
        frame = AsciiFrame(width=client.spec.cols, height=client.spec.rows, text=text, flags=0)
        payload = frame.encode()
        if client.conn.encrypted and len(payload) + HEADER_SIZE > MAX_ENCRYPTED_PLAINTEXT:
            # Beyond what can be encrypted (huge truecolor terminals): zstd, which native clients
            # decode (ACIP 4); if even that is too big, skip this frame.
            payload = frame.encode_compressed()
            if len(payload) + HEADER_SIZE > MAX_ENCRYPTED_PLAINTEXT:
                log_every(_log, logging.WARNING, 10.0, "client %d: frame of %d bytes too large", client.id, len(text))
                return None
        return payload

    async def _tick_loop(self) -> None:
        """Video frames at each receiver's fps while anyone sends video; a packet every keepalive."""
        loop = asyncio.get_running_loop()
        keepalive = self.config.keepalive_interval_s
        frame_tick = 1 / max(1, self.config.max_fps)
        while True:
            now = loop.time()
            sources = self._video_sources()
            pending = False
            busy = False
            if sources:
                key_base = tuple((s.source_id, s.seq) for s in sources)
                tiles = self.compositor.tiles_for(len(sources))
                started = time.perf_counter()
                rendered = 0
                for client in list(self.clients.values()):
                    if rendered and time.perf_counter() - started > RENDER_SLICE_S:
                        # Many receivers with different specs: let PONGs and reads through, then
                        # carry on from a fresh snapshot (those already served are up to date).
                        busy = True
                        break
                    if not client.open or client.spec is None:
                        continue
                    key = (key_base, client.spec)
                    if key == client.rendered_key:
                        continue
                    if now < client.next_frame_at:
                        pending = True
                        continue
                    frame = self._frame_for(client, sources)
                    rendered += 1
                    if frame is None:
                        client.rendered_key = key
                        continue
                    if client.video_out is not None:
                        self.metrics.dropped_frames += 1
                    client.video_out = _Video(frame, tiles)
                    client.rendered_key = key
                    client.next_frame_at = now + client.frame_interval
                    client.last_activity = now
                    client.wakeup.set()
            if busy:
                await asyncio.sleep(0)
                continue
            next_keepalive = now + keepalive
            for client in list(self.clients.values()):
                # Only joined clients: before their first encrypted packet the key variant may be
                # undecided, so nothing encrypted can go out yet (ACIP 3.4).
                if not (client.joined and client.open):
                    continue
                if now - client.last_activity >= keepalive:
                    self._queue(client, PacketType.SERVER_STATE, self._server_state())
                next_keepalive = min(next_keepalive, client.last_activity + keepalive)
            if pending:
                await asyncio.sleep(frame_tick)
            else:
                wait = max(0.005, min(next_keepalive - loop.time(), 0.1))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._video_pulse.wait(), wait)

    async def _audio_loop(self) -> None:
        """Every audio interval, give each joined listener its mix (everyone else's voice)."""
        loop = asyncio.get_running_loop()
        interval = self.config.audio_interval_s
        while True:
            await asyncio.sleep(interval)
            if loop.time() - self._last_audio_in > AUDIO_IDLE_S and not self.mixer.has_audio():
                continue
            for client in list(self.clients.values()):
                if not client.open or not client.joined:
                    continue
                frames = self.mixer.mix_for(client.id)
                if not frames or client.removed:
                    continue
                for start in range(0, len(frames), OPUS_FRAMES_PER_BATCH):
                    batch = AudioOpusBatch(
                        sample_rate=OPUS_SAMPLE_RATE,
                        frame_duration_ms=OPUS_FRAME_MS,
                        frames=frames[start : start + OPUS_FRAMES_PER_BATCH],
                    )
                    client.audio.append(batch.encode())
                client.last_activity = loop.time()
                client.wakeup.set()
            for source_id, reason in self.mixer.pop_errors().items():
                log_every(_log, logging.INFO, 10.0, "client %d: audio decode failed: %s", source_id, reason)


def _stream_bits(flags: StreamFlags) -> int:
    return int(flags.streams)


async def _quiet_close(link: Link, reason: str) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(link.close(reason), FINAL_FLUSH_S + 0.5)
