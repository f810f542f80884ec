"""WebSocket transport: aiohttp on pre-bound sockets, one ACIP packet per binary message (ACIP.md 6).

Each upgraded connection becomes a :class:`WsLink` served by the same ``Room`` as TCP clients; plain
HTTP on the port answers ``/health`` and ``/metrics`` (see :mod:`asciichat_server.http`).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import WSMsgType, hdrs, web

from asciichat_server import http as http_routes
from asciichat_server.log import log_every
from asciichat_server.metrics import Metrics
from asciichat_server.net import listener_address
from asciichat_server.protocol.constants import HEADER_SIZE, MAX_PAYLOAD

__all__ = [
    "CLOSE_GOING_AWAY",
    "CLOSE_POLICY_VIOLATION",
    "CLOSE_TIMEOUT_S",
    "CLOSE_TRY_AGAIN_LATER",
    "DEFAULT_HEARTBEAT_S",
    "DEFAULT_REASSEMBLY_TIMEOUT_S",
    "SUBPROTOCOL",
    "WS_MAX_MSG_SIZE",
    "FrameScanner",
    "ReassemblyInfo",
    "ReassemblyWatchdog",
    "WsLink",
    "WsListener",
    "WsSettings",
    "close_code_for",
    "create_app",
    "start_ws",
]

_log = logging.getLogger(__name__)

SUBPROTOCOL = "acip"
# c41's native client gives up after 2 s without a new fragment (transport.c: websocket_recv; the
# comments still say 100 ms, the constant is 2 s). FIX_IDEAS 2C: 100 ms dropped 230 KB frames.
DEFAULT_REASSEMBLY_TIMEOUT_S = 2.0
# One message carries one packet: 22-byte header + up to 5 MiB payload; an ENCRYPTED wrapper adds
# another header, a 24-byte nonce and a 16-byte MAC (ACIP 6.2 asks for >= 5 MiB + 62). aiohttp
# rejects a message whose size reaches the limit, so leave generous room above that.
WS_MAX_MSG_SIZE = MAX_PAYLOAD + 4096
# Browsers answer pings by themselves, libwebsockets clients too; a peer that stops answering for
# this long (plus half of it for the pong) is gone even if TCP has not noticed yet.
DEFAULT_HEARTBEAT_S = 20.0
# Idle plain-HTTP connections (health checks, scrapers) are closed after this long; aiohttp's own
# default keeps them for an hour. WebSocket connections are not affected.
HTTP_KEEPALIVE_S = 5.0
# How long close() waits for the peer's close frame; shutdown must finish within ~2 s (issue 4).
CLOSE_TIMEOUT_S = 1.0
# A send is reported as [WS_FLOW] when this much was already waiting in the socket's write buffer,
# or when it had to wait this long for the peer to drain it (aiohttp pauses above 64 KiB).
FLOW_LOG_BYTES = 512 * 1024
FLOW_LOG_WAIT_S = 0.05
# Rate limits (per call site) for the tagged lines; storms must not flood the log.
CONNECT_LOG_EVERY_S = 1.0
REASSEMBLY_LOG_EVERY_S = 10.0
FLOW_LOG_EVERY_S = 10.0
# RFC 6455 7.4.1 close codes used here.
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_POLICY_VIOLATION = 1008
CLOSE_TRY_AGAIN_LATER = 1013
# Room.close reasons (the part before any ':') -> close code, so a browser's onclose says why.
_CLOSE_CODES = {
    "shutdown": CLOSE_GOING_AWAY,
    "server shutdown": CLOSE_GOING_AWAY,
    "server full": CLOSE_TRY_AGAIN_LATER,
    "rate limited": CLOSE_TRY_AGAIN_LATER,
    "too many handshakes": CLOSE_TRY_AGAIN_LATER,
    "protocol error": CLOSE_PROTOCOL_ERROR,
    "auth failed": CLOSE_POLICY_VIOLATION,
    "send queue overflow": CLOSE_POLICY_VIOLATION,
}
# Interleaved whole messages held back while one fragmented message is open, at most (beyond
# this the peer gets aiohttp's protocol error): plenty for c41's PINGs and audio batches.
MAX_HELD_BYTES = 1024 * 1024
# After the gap timer expires, how long to let the loop poll its sockets before dropping the message.
_CONFIRM_DELAY_S = 0.01
# A close frame's payload is at most 125 bytes: 2 for the code, the rest for the reason.
_MAX_CLOSE_REASON = 123

_OP_CONTINUATION = 0x0
_OP_TEXT = 0x1
_OP_BINARY = 0x2


# --- Reassembly watchdog ---------------------------------------------------------------------------


class FrameScanner:
    """Follows WebSocket frame boundaries in a byte stream without buffering payloads (sans-I/O).

    aiohttp's reader reassembles fragmented messages but reports nothing until a message is whole,
    so this scanner reads the same bytes in parallel to learn when a data message is in flight,
    how many fragments it has and how many payload bytes arrived. Control frames (ping, pong,
    close) may sit between fragments and are not progress of the message.

    It also spots the one framing fault real peers commit: c41's native client sends from two
    threads, so a whole single-frame message (BINARY with FIN) can land between the fragments of
    a large one (RFC 6455 5.4 forbids it; aiohttp would close the connection). Such frames are
    reported in ``held`` so the caller can hand them on after the fragmented message.
    """

    def __init__(self, hold_interleaved: bool = True, max_held_bytes: int = MAX_HELD_BYTES) -> None:
        self.hold_interleaved = hold_interleaved
        self.max_held_bytes = max_held_bytes
        self._header = bytearray()
        self._header_needed = 2
        self._payload_left = 0
        self._frame_is_data = False
        self._frame_fin = False
        self._in_frame = False
        self._holding = False  # the current frame is an interleaved whole message
        self._held_bytes = 0  # bytes held since the fragmented message began
        #: True from the first header byte of a data frame until its final frame's last byte.
        self.in_message = False
        #: Data frames (first + continuations) of the message in flight.
        self.fragments = 0
        #: Payload bytes of the message in flight received so far.
        self.size = 0
        #: Whole data messages seen since creation (interleaved ones not included).
        self.messages = 0
        #: (fragments, payload bytes) of the last whole message.
        self.last_message = (0, 0)
        #: Whole messages found inside fragmented ones since creation.
        self.interleaved = 0
        #: After feed(): (start, end) ranges of the chunk that belong to interleaved messages.
        self.held: list[tuple[int, int]] = []
        #: After feed(): offsets in the chunk where a fragmented message that had messages held
        #: inside it ended (where the held bytes belong).
        self.release_at: list[int] = []

    def feed(self, data: bytes) -> bool:
        """Consume ``data``; True when some of it belonged to the data message in flight."""
        self.held = []
        self.release_at = []
        progress = False
        view = memoryview(data)
        pos = 0
        end = len(view)
        while pos < end:
            # Each pass handles bytes of one frame only: (the rest of) its header, then payload.
            before = pos
            ready = self._in_frame
            if not ready:
                take = min(self._header_needed - len(self._header), end - pos)
                if not self._header:
                    self._start_frame(view[pos])
                self._header += view[pos : pos + take]
                pos += take
                ready = len(self._header) >= self._header_needed and self._header_complete()
            counts = self._frame_is_data and not self._holding
            if ready:
                take = min(self._payload_left, end - pos)
                pos += take
                self._payload_left -= take
                if counts:
                    self.size += take
            if counts and pos > before:
                progress = True
            if self._holding and pos > before:
                self._hold(before, pos)
            if ready and self._payload_left == 0:
                self._end_frame(pos)
        return progress

    def _hold(self, start: int, stop: int) -> None:
        self._held_bytes += stop - start
        if self.held and self.held[-1][1] == start:
            self.held[-1] = (self.held[-1][0], stop)
        else:
            self.held.append((start, stop))

    def _start_frame(self, first_byte: int) -> None:
        opcode = first_byte & 0x0F
        self._frame_fin = bool(first_byte & 0x80)
        self._frame_is_data = opcode in (_OP_CONTINUATION, _OP_TEXT, _OP_BINARY)
        if not self._frame_is_data:
            return
        if (
            opcode != _OP_CONTINUATION
            and self.in_message
            and self._frame_fin
            and self.hold_interleaved
            and self._held_bytes < self.max_held_bytes
        ):
            self._holding = True
            self.interleaved += 1
            return
        # Anything else inside a fragmented message (a second fragmented one, too much held) is a
        # protocol error that aiohttp reports itself.
        if opcode != _OP_CONTINUATION or not self.in_message:
            # A new message (a stray continuation is a protocol error aiohttp reports itself).
            self.in_message = True
            self.fragments = 0
            self.size = 0
        self.fragments += 1

    def _header_complete(self) -> bool:
        """Grow the wanted header size as length/mask bytes become known; True once it is whole."""
        second = self._header[1]
        length_flag = second & 0x7F
        masked = bool(second & 0x80)
        needed = 2 + (2 if length_flag == 126 else 8 if length_flag == 127 else 0) + (4 if masked else 0)
        if len(self._header) < needed:
            self._header_needed = needed
            return False
        if length_flag == 126:
            length = struct.unpack_from("!H", self._header, 2)[0]
        elif length_flag == 127:
            length = struct.unpack_from("!Q", self._header, 2)[0]
        else:
            length = length_flag
        self._payload_left = length
        self._in_frame = True
        return True

    def _end_frame(self, pos: int) -> None:
        if self._holding:
            self._holding = False
        elif self._frame_is_data and self._frame_fin:
            self.in_message = False
            self.messages += 1
            self.last_message = (self.fragments, self.size)
            if self._held_bytes:
                self.release_at.append(pos)
                self._held_bytes = 0
        self._header.clear()
        self._header_needed = 2
        self._in_frame = False


class _ParserLike(Protocol):
    def feed_data(self, data: bytes) -> tuple[bool, bytes]: ...

    def feed_eof(self) -> None: ...


@dataclass(frozen=True)
class ReassemblyInfo:
    """One fragmented message: dropped (gap_s = the gap that ended it) or whole (the longest gap)."""

    fragments: int
    size: int
    gap_s: float
    age_s: float
    timeout_s: float


class ReassemblyWatchdog:
    """Sits in front of aiohttp's WebSocket reader and drops a message whose bytes stop arriving.

    Why here: aiohttp 3.14's reader (``_websocket/reader_c``, a Cython class) keeps its fragment
    state in C fields and only hands complete messages to its queue, so neither the queue nor the
    reader can tell us when a fragment arrived. The web protocol feeds every received chunk to
    ``protocol._payload_parser.feed_data()``; standing in that place with a wrapper (installed per
    connection by :class:`_AcipWebSocketResponse`, no global patching) lets us see each byte before
    the reader does. The gap timer restarts on every byte of the message in flight (like c41,
    whose timer restarts on every lws receive callback); control frames in between do not count.
    One timer handle per connection, re-armed lazily, keeps per-chunk cost to a timestamp.
    """

    def __init__(
        self,
        inner: _ParserLike,
        loop: asyncio.AbstractEventLoop,
        transport: asyncio.Transport,
        timeout_s: float,
        on_timeout: Callable[[ReassemblyInfo], None],
        on_complete: Callable[[ReassemblyInfo], None] | None = None,
        peer: str = "?",
    ) -> None:
        self._inner = inner
        self.peer = peer
        self._held = bytearray()
        self._on_complete = on_complete
        self._max_gap = 0.0
        self._loop = loop
        self._transport = transport
        self.timeout_s = timeout_s
        self._on_timeout = on_timeout
        self.scanner = FrameScanner()
        self._last_progress = 0.0
        self._message_started = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._confirming = False
        self.dropped = False

    def observe(self, data: bytes) -> None:
        """Account for bytes the inner reader has already been given (the post-upgrade tail).

        An interleaved message in these bytes is past help (the reader has it already); aiohttp
        reports that as its protocol error.
        """
        self._track(data)

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        if self.dropped:
            # The message was given up: its remaining bytes must not complete it later.
            return False, b""
        self._track(data)
        scanner = self.scanner
        if not scanner.held and not (scanner.release_at and self._held):
            return self._inner.feed_data(data)  # the usual case: bytes pass untouched
        return self._inner.feed_data(self._reorder(data))

    def _reorder(self, data: bytes) -> bytes:
        """Move interleaved whole messages behind the fragmented message they interrupted.

        Frames are self-contained (each carries its own mask key), so the held frames' bytes can
        be handed to the reader later, verbatim; aiohttp then sees a valid stream and still
        validates every frame itself. The room gets the small message a few ms late, after the
        large one — the same order a single-threaded sender would have used.
        """
        scanner = self.scanner
        cuts = sorted(
            [(start, stop, True) for start, stop in scanner.held] + [(at, at, False) for at in scanner.release_at]
        )
        out = bytearray()
        pos = 0
        for start, stop, is_held in cuts:
            out += data[pos:start]
            if is_held:
                self._held += data[start:stop]
            else:
                out += self._held
                self._held.clear()
            pos = stop
        out += data[pos:]
        if scanner.held:
            log_every(
                _log,
                logging.DEBUG,
                REASSEMBLY_LOG_EVERY_S,
                "[WS_REASSEMBLY] interleaved: whole message inside a fragmented one (fragments=%d so far, "
                "held=%d bytes); delivered after it, peer=%s",
                scanner.fragments,
                len(self._held),
                self.peer,
            )
        return bytes(out)

    def feed_eof(self) -> None:
        self._cancel_timer()
        self._inner.feed_eof()

    def _track(self, data: bytes) -> None:
        scanner = self.scanner
        was_in_message = scanner.in_message
        messages_before = scanner.messages
        progress = scanner.feed(data)
        now = self._loop.time()
        if was_in_message and progress:
            self._max_gap = max(self._max_gap, now - self._last_progress)
        if scanner.messages != messages_before and self._on_complete is not None:
            fragments, size = scanner.last_message
            if fragments > 1:
                age = now - self._message_started if was_in_message else 0.0
                self._on_complete(ReassemblyInfo(fragments, size, self._max_gap, age, self.timeout_s))
        if not scanner.in_message or self.timeout_s <= 0:  # 0: no timer (HEAD has none at all)
            self._cancel_timer()
            return
        if not was_in_message or scanner.messages != messages_before:
            self._message_started = now
            self._max_gap = 0.0
        if progress:
            self._last_progress = now
        if self._timer is None:
            self._timer = self._loop.call_at(self._last_progress + self.timeout_s, self._check)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check(self) -> None:
        self._timer = None
        if self.dropped or not self.scanner.in_message or self._transport.is_closing():
            return
        now = self._loop.time()
        if not self._transport.is_reading():
            # aiohttp paused reading because the room has not consumed earlier messages: the
            # stall is ours, not the peer's, so it does not count against the message.
            self._last_progress = now
        deadline = self._last_progress + self.timeout_s
        if now < deadline:
            self._confirming = False
            self._timer = self._loop.call_at(deadline, self._check)
            return
        if not self._confirming:
            # A loop that woke up late runs due timers before it reads sockets that became readable
            # meanwhile, so the peer's next bytes may be sitting unread: look once more after the
            # loop has polled its sockets before blaming the peer.
            self._confirming = True
            self._timer = self._loop.call_later(_CONFIRM_DELAY_S, self._check)
            return
        self._confirming = False
        self.dropped = True
        self._on_timeout(
            ReassemblyInfo(
                fragments=self.scanner.fragments,
                size=self.scanner.size,
                gap_s=now - self._last_progress,
                age_s=now - self._message_started,
                timeout_s=self.timeout_s,
            )
        )


def close_frame(code: int, reason: str) -> bytes:
    """An unmasked (server-side) close frame."""
    payload = struct.pack("!H", code) + _close_reason_bytes(reason)
    return bytes((0x88, len(payload))) + payload


def _close_reason_bytes(reason: str) -> bytes:
    raw = reason.encode("utf-8")[:_MAX_CLOSE_REASON]
    # Cutting may split a UTF-8 sequence; the close reason must stay valid UTF-8.
    return raw.decode("utf-8", errors="ignore").encode("utf-8")


class _AcipWebSocketResponse(web.WebSocketResponse):
    """WebSocketResponse whose frame reader sits behind a :class:`ReassemblyWatchdog`."""

    def __init__(
        self,
        *,
        reassembly_timeout_s: float,
        on_reassembly_timeout: Callable[[ReassemblyInfo], None],
        on_reassembled: Callable[[ReassemblyInfo], None] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._reassembly_timeout_s = reassembly_timeout_s
        self._on_reassembly_timeout = on_reassembly_timeout
        self._on_reassembled = on_reassembled
        self.watchdog: ReassemblyWatchdog | None = None

    def _post_start(self, request: web.BaseRequest, protocol: str | None, writer: Any) -> None:
        handler = request.protocol
        # Frames sent right behind the upgrade request wait here until the reader exists; the
        # reader gets them inside super()._post_start, so the scanner must be told afterwards.
        early = bytes(getattr(handler, "_message_tail", b""))
        super()._post_start(request, protocol, writer)
        inner = getattr(handler, "_payload_parser", None)
        transport = request.transport
        if inner is None or transport is None or self._loop is None or not hasattr(inner, "feed_data"):
            # Keep serving without the timer rather than refuse every client; tests catch this.
            log_every(_log, logging.ERROR, 3600, "aiohttp internals changed: WebSocket reassembly timeout is off")
            return
        watchdog = ReassemblyWatchdog(
            inner,
            self._loop,
            transport,
            self._reassembly_timeout_s,
            self._on_reassembly_timeout,
            self._on_reassembled,
            _peer_of(request),
        )
        handler._payload_parser = watchdog
        if early:
            watchdog.observe(early)
        self.watchdog = watchdog


# --- Link --------------------------------------------------------------------------------------------


class WsLink:
    """One WebSocket client as the room sees it (:class:`asciichat_server.link.Link`, kind "ws")."""

    kind = "ws"

    def __init__(self, ws: web.WebSocketResponse, request: web.BaseRequest, peer: str, metrics: Metrics) -> None:
        self._ws = ws
        self._request = request
        self.peer = peer
        self._metrics = metrics
        #: Set by the room when it assigns a slot; shown in [WS_DISCONNECT].
        self.client_id: int | None = None
        #: First reason the connection ended for (ours or the peer's).
        self.close_reason = ""
        #: Room may set this on removal (the client was a joined member); shown in [WS_DISCONNECT].
        self.active: bool | None = None
        #: True when we ended the connection while the peer was still there.
        self.closed_by_server = False
        self._closing: asyncio.Task[None] | None = None
        self._recv_done = False
        self.opened_at = time.monotonic()

    @property
    def closed(self) -> bool:
        return self._closing is not None or self._ws.closed

    def _note_reason(self, reason: str) -> None:
        if not self.close_reason:
            self.close_reason = reason

    async def recv(self) -> bytes | None:
        """One whole binary message (= one ACIP packet); None once the connection is over."""
        while not self._recv_done:
            if self._ws.closed:
                # receive() on a closed response counts misuse and eventually raises.
                self._note_reason("closed")
                break
            msg = await self._ws.receive()
            kind = msg.type
            if kind is WSMsgType.BINARY:
                data: bytes = msg.data
                if len(data) < HEADER_SIZE:
                    # The C receiver drops these too (a browser's 1-byte heartbeat would be one).
                    log_every(
                        _log,
                        logging.DEBUG,
                        FLOW_LOG_EVERY_S,
                        "[WS] dropped %d-byte message from %s",
                        len(data),
                        self.peer,
                    )
                    continue
                return data
            if kind is WSMsgType.TEXT:
                self._note_reason("text message received (ACIP uses binary messages only)")
                await self.close(self.close_reason, code=CLOSE_UNSUPPORTED_DATA)
                break
            if kind is WSMsgType.CLOSE:
                self._note_reason(f"peer closed ({msg.data}{': ' + msg.extra if msg.extra else ''})")
            elif kind is WSMsgType.ERROR:
                self._note_reason(f"websocket error: {msg.data}")
            elif kind is WSMsgType.CLOSED:
                self._note_reason("connection lost")
            elif kind is WSMsgType.CLOSING:
                self._note_reason("closing")
            else:  # PING/PONG are answered by aiohttp and never surface with autoping on.
                continue
            break
        self._recv_done = True
        return None

    async def send(self, data: bytes) -> None:
        """Send one packet as one binary message; ConnectionError once the link is closed."""
        if self.closed:
            raise ConnectionResetError(f"websocket to {self.peer} is closed")
        transport = self._request.transport
        buffered = transport.get_write_buffer_size() if transport is not None else 0
        # aiohttp writes a whole frame with synchronous transport writes and only then waits for
        # the socket to drain, so messages never interleave; the room's single writer per client
        # keeps them in order. One frame per message: receivers reassemble anyway (ACIP 6.2).
        started = time.monotonic()
        try:
            await self._ws.send_bytes(data)
        except ConnectionError:
            raise
        except RuntimeError as exc:  # aiohttp: "Call .prepare() first" / closed writer states
            raise ConnectionResetError(str(exc)) from exc
        waited = time.monotonic() - started
        if waited >= FLOW_LOG_WAIT_S or buffered >= FLOW_LOG_BYTES:
            # The peer reads slower than we send: the socket buffer is the queue that grows.
            log_every(
                _log,
                logging.DEBUG,
                FLOW_LOG_EVERY_S,
                "[WS_FLOW] queue=%d bytes buffered before a %d-byte send, waited=%.3fs for drain, id=%s, peer=%s",
                buffered,
                len(data),
                waited,
                _fmt_id(self.client_id),
                self.peer,
            )

    async def close(self, reason: str = "", *, code: int | None = None) -> None:
        """Close with a close frame carrying ``reason``; idempotent, safe from any task."""
        if reason:
            self._note_reason(reason)
        if self._closing is None:
            self.closed_by_server = not self._recv_done and not self._ws.closed
            if code is None:
                code = close_code_for(reason)
            self._closing = asyncio.ensure_future(self._close(code, reason or "bye"))
        # shield: a caller cancelled mid-close must not leave the socket half closed.
        await asyncio.shield(self._closing)

    async def _close(self, code: int, reason: str) -> None:
        try:
            await asyncio.wait_for(
                self._ws.close(code=code, message=_close_reason_bytes(reason)), CLOSE_TIMEOUT_S + 0.5
            )
        except (TimeoutError, ConnectionError, RuntimeError):
            pass
        finally:
            transport = self._request.transport
            if transport is not None and not transport.is_closing():
                transport.close()

    def abort_reassembly(self, info: ReassemblyInfo) -> None:
        """The watchdog gave up on a message: close frame, then close the socket (synchronous)."""
        self._metrics.reassembly_timeouts += 1
        self._note_reason(f"reassembly timeout after {info.fragments} fragment(s), {info.size} bytes")
        log_every(
            _log,
            logging.WARNING,
            REASSEMBLY_LOG_EVERY_S,
            "[WS_REASSEMBLY] message dropped: fragments=%d, elapsed=%.2fs/%ss, size=%d, age=%.2fs, id=%s, peer=%s",
            info.fragments,
            info.gap_s,
            _fmt_seconds(info.timeout_s),
            info.size,
            info.age_s,
            _fmt_id(self.client_id),
            self.peer,
        )
        self.closed_by_server = self.closed_by_server or not self._recv_done
        _abort_transport(self._request.transport)


def _abort_transport(transport: asyncio.BaseTransport | None) -> None:
    """Close frame 1008 "reassembly timeout", then close the socket; never waits."""
    if transport is None or transport.is_closing():
        return
    # Written directly rather than through ws.close(): that would wait for the peer's close frame,
    # which the watchdog no longer parses (the stalled message's bytes are discarded). aiohttp
    # writes each frame with synchronous transport writes, so this cannot land inside another frame.
    if isinstance(transport, asyncio.WriteTransport):
        transport.write(close_frame(CLOSE_POLICY_VIOLATION, "reassembly timeout"))
    transport.close()


def close_code_for(reason: str) -> int:
    """The WebSocket close code for one of Room's close reasons ("protocol error: ..." -> 1002)."""
    key = reason.split(":", 1)[0].strip().lower()
    return _CLOSE_CODES.get(key, CLOSE_NORMAL)


def _log_safe(text: str, limit: int = 200) -> str:
    """Free text (a peer's close reason, an aiohttp error) made safe inside a key=value log line."""
    cleaned = "".join(c if c.isprintable() else " " for c in text).replace("=", ":")
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 3] + "..."


def _fmt_id(client_id: int | None) -> str:
    return "-" if client_id is None else str(client_id)


def _fmt_seconds(value: float) -> str:
    return f"{value:g}"


def _peer_of(request: web.BaseRequest) -> str:
    transport = request.transport
    name = transport.get_extra_info("peername") if transport is not None else None
    if not name:
        return request.remote or "?"
    host, port = str(name[0]), int(name[1])
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# --- aiohttp application ---------------------------------------------------------------------------


class _Room(Protocol):
    async def serve(self, link: Any) -> None: ...


@dataclass
class WsSettings:
    """The knobs this transport reads from ServerConfig (with their defaults when absent)."""

    #: Gap allowed between bytes of one message; 0 turns the timer off.
    reassembly_timeout_s: float = DEFAULT_REASSEMBLY_TIMEOUT_S
    #: aiohttp ping interval (pong awaited for half of it); None or 0 turns pings off.
    heartbeat_s: float | None = DEFAULT_HEARTBEAT_S
    #: Idle plain-HTTP connections on the port are closed after this long.
    http_keepalive_s: float = HTTP_KEEPALIVE_S

    @classmethod
    def from_config(cls, config: Any) -> WsSettings:
        timeout = getattr(config, "ws_reassembly_timeout_s", None)
        if timeout is None:
            timeout = getattr(config, "reassembly_timeout_s", DEFAULT_REASSEMBLY_TIMEOUT_S)
        heartbeat = getattr(config, "ws_heartbeat_s", DEFAULT_HEARTBEAT_S)
        keepalive = float(getattr(config, "ws_http_keepalive_s", HTTP_KEEPALIVE_S))
        return cls(reassembly_timeout_s=float(timeout), heartbeat_s=heartbeat or None, http_keepalive_s=keepalive)


class WsState:
    """What the request handlers share, hung off the aiohttp application."""

    def __init__(self, room: _Room, metrics: Metrics, settings: WsSettings) -> None:
        self.room = room
        self.metrics = metrics
        self.settings = settings
        self.links: set[WsLink] = set()
        self.started_at = time.monotonic()
        self.stopping = False


WS_STATE: web.AppKey[WsState] = web.AppKey("asciichat_ws_state", WsState)


def create_app(room: _Room, metrics: Metrics, settings: WsSettings | None = None) -> web.Application:
    """The aiohttp application for the WebSocket port: upgrades on any path, /health, /metrics."""
    app = web.Application()
    app[WS_STATE] = WsState(room, metrics, settings or WsSettings())
    app.router.add_route("*", "/{tail:.*}", _dispatch)
    app.on_shutdown.append(_close_all_links)
    return app


def _is_upgrade(request: web.BaseRequest) -> bool:
    return request.headers.get(hdrs.UPGRADE, "").strip().lower() == "websocket"


async def _dispatch(request: web.Request) -> web.StreamResponse:
    if _is_upgrade(request):
        return await _serve_websocket(request)
    return await http_routes.handle(request, request.app[WS_STATE])


async def _serve_websocket(request: web.Request) -> web.StreamResponse:
    state = request.app[WS_STATE]
    if state.stopping:
        raise web.HTTPServiceUnavailable(text="server shutting down\n")
    link_box: list[WsLink] = []

    def on_timeout(info: ReassemblyInfo) -> None:
        if link_box:
            link_box[0].abort_reassembly(info)
        else:  # the upgrade has not finished yet: nobody to tell, just end the connection
            state.metrics.reassembly_timeouts += 1
            _abort_transport(request.transport)

    def on_reassembled(info: ReassemblyInfo) -> None:
        # ascii-chat logs fragment reassembly as it happens (rate limited); elapsed here is the
        # longest gap between the message's bytes, i.e. how close it came to the timeout.
        link = link_box[0] if link_box else None
        log_every(
            _log,
            logging.DEBUG,
            REASSEMBLY_LOG_EVERY_S,
            "[WS_REASSEMBLY] reassembled: fragments=%d, elapsed=%.2fs/%ss, size=%d, age=%.2fs, id=%s, peer=%s",
            info.fragments,
            info.gap_s,
            _fmt_seconds(info.timeout_s),
            info.size,
            info.age_s,
            _fmt_id(link.client_id if link else None),
            link.peer if link else _peer_of(request),
        )

    ws = _AcipWebSocketResponse(
        protocols=(SUBPROTOCOL,),
        compress=False,
        max_msg_size=WS_MAX_MSG_SIZE,
        heartbeat=state.settings.heartbeat_s,
        timeout=CLOSE_TIMEOUT_S,
        autoping=True,
        reassembly_timeout_s=state.settings.reassembly_timeout_s,
        on_reassembly_timeout=on_timeout,
        on_reassembled=on_reassembled,
    )
    # Raises HTTPBadRequest (a 400 answer) for a malformed upgrade; ConnectionResetError if the
    # peer vanished meanwhile, which aiohttp logs at debug and we need not handle.
    await ws.prepare(request)
    peer = _peer_of(request)
    link = WsLink(ws, request, peer, state.metrics)
    link_box.append(link)
    state.links.add(link)
    log_every(
        _log,
        logging.DEBUG,
        CONNECT_LOG_EVERY_S,
        "[WS_CONNECT] peer=%s, path=%s, subprotocol=%s, open=%d",
        peer,
        request.raw_path,  # as sent (percent-encoded): a decoded path could fake key=value pairs
        ws.ws_protocol or "-",
        len(state.links),
    )
    cleanup = "done"
    try:
        await state.room.serve(link)
    except asyncio.CancelledError:
        cleanup = "cancelled"
        link._note_reason("server shutdown")
        raise
    except Exception as exc:
        # Room.serve promises not to raise; if it does, the client still must not leak.
        cleanup = "error"
        link._note_reason(f"internal error: {exc!r}")
        _log.exception("[WS] room.serve failed for %s", peer)
    finally:
        # The room's view (joined and not left) when it gives one; else whether the peer was
        # still connected when the session ended (we closed, not the peer).
        active = link.active if link.active is not None else link.closed_by_server
        try:
            await link.close(link.close_reason or "session over")
        finally:
            state.links.discard(link)
            log_every(
                _log,
                logging.DEBUG,
                CONNECT_LOG_EVERY_S,
                "[WS_DISCONNECT] Client disconnecting (id=%s, cleanup=%s, active=%s, reason=%s, peer=%s, "
                "duration=%.2fs, open=%d)",
                _fmt_id(link.client_id),
                cleanup,
                "true" if active else "false",
                _log_safe(link.close_reason or "session over"),
                peer,
                time.monotonic() - link.opened_at,
                len(state.links),
            )
    return ws


async def _close_all_links(app: web.Application) -> None:
    state = app[WS_STATE]
    state.stopping = True
    links = list(state.links)
    if links:
        await asyncio.gather(
            *(link.close("server shutdown", code=CLOSE_GOING_AWAY) for link in links), return_exceptions=True
        )


class WsListener:
    """The running WebSocket port; ``close()`` closes every client and the listening sockets."""

    def __init__(self, runner: web.AppRunner, sites: list[web.SockSite], addresses: list[str]) -> None:
        self._runner = runner
        self._sites = sites
        self.addresses = addresses
        self._closed: asyncio.Future[None] | None = None

    @property
    def app(self) -> web.Application:
        return self._runner.app

    @property
    def links(self) -> set[WsLink]:
        return self.app[WS_STATE].links

    async def close(self) -> None:
        if self._closed is None:
            self._closed = asyncio.ensure_future(self._runner.cleanup())
        await asyncio.shield(self._closed)


async def start_ws(server: Any, sockets: list[socket.socket]) -> WsListener:
    """Serve the WebSocket port on ``sockets`` (bound by ``net.bind_listeners``) for ``server.room``.

    Returns once every socket accepts connections. ``server`` needs ``room``, ``metrics`` and
    ``config`` (``ws_reassembly_timeout_s``, optional ``ws_heartbeat_s``).
    """
    settings = WsSettings.from_config(getattr(server, "config", None))
    app = create_app(server.room, server.metrics, settings)
    # access_log off: a storm of connects must not mean one INFO line each; handle_signals off:
    # the server owns SIGINT/SIGTERM. Short shutdown_timeout: handlers end once links are closed.
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log=None,
        shutdown_timeout=CLOSE_TIMEOUT_S,
        keepalive_timeout=settings.http_keepalive_s,
    )
    await runner.setup()
    sites: list[web.SockSite] = []
    try:
        for sock in sockets:
            site = web.SockSite(runner, sock)
            await site.start()
            sites.append(site)
    except BaseException:
        await runner.cleanup()
        raise
    return WsListener(runner, sites, [listener_address(s) for s in sockets])
