"""Active probes against a local port: TCP connect per family, an ACIP hello, a WebSocket upgrade.

Only loopback addresses are ever contacted. The ACIP bytes come from the project's sans-I/O
protocol core, so the probe speaks exactly what the server parses.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import time

from asciichat_diag.ports.model import AcipProbe, ConnectProbe, WsProbe, format_endpoint

LOOPBACKS = (("127.0.0.1", "IPv4"), ("::1", "IPv6"))
SERVER_FULL_PREFIX = b"SERVER_FULL"
# Mode byte of PROTOCOL_VERSION: bit0 ENCRYPT. A default ascii-chat client sends 0x01.
CLIENT_CRYPTO_MODE = 0x01


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 2)


def _classify(exc: BaseException) -> tuple[str, str]:
    if isinstance(exc, TimeoutError):
        return "timeout", "no answer before the timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "refused", "connection refused"
    if isinstance(exc, OSError) and exc.errno in (errno.EADDRNOTAVAIL, errno.ENETUNREACH, errno.EAFNOSUPPORT):
        return "unavailable", f"address not available here ({exc.strerror})"
    return "error", f"{type(exc).__name__}: {exc}"


async def connect_probe(address: str, family: str, port: int, timeout_s: float) -> ConnectProbe:
    """One TCP connect from a running event loop; closes at once without sending anything."""
    import asyncio

    start = time.perf_counter()
    try:
        _reader, writer = await asyncio.wait_for(asyncio.open_connection(address, port), timeout_s)
    except Exception as exc:  # every failure is a probe result
        status, text = _classify(exc)
        return ConnectProbe(address, family, status, _ms(start), text)
    elapsed = _ms(start)
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass
    return ConnectProbe(address, family, "ok", elapsed)


def _could_be_acip(data: bytes, magic: bytes) -> bool:
    """Do the first bytes agree with an ACIP header's magic (so far)?"""
    head = data[: len(magic)]
    return magic.startswith(head)


async def acip_probe(address: str, port: int, timeout_s: float) -> AcipProbe:
    """Send PROTOCOL_VERSION (and CRYPTO_CAPABILITIES once answered); read what the server says.

    An encrypting ascii-chat server echoes PROTOCOL_VERSION and answers the capabilities with
    CRYPTO_PARAMETERS, which tells whether it signs its keys and wants client keys. Stops before
    the key exchange: nothing is joined, no slot stays taken.
    """
    import asyncio

    from asciichat_server.protocol.constants import MAGIC, PacketType
    from asciichat_server.protocol.errors import ProtocolError
    from asciichat_server.protocol.packets import PacketDecoder, encode_packet
    from asciichat_server.protocol.payloads import (
        CryptoCapabilities,
        CryptoParameters,
        ErrorMessage,
        ProtocolVersion,
    )

    magic_bytes = MAGIC.to_bytes(8, "big")
    start = time.perf_counter()
    result = AcipProbe(address, "error", False, None, 0.0)
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(address, port), timeout_s)
    except Exception as exc:
        result.status, result.detail = _classify(exc)
        result.ms = _ms(start)
        return result

    def name(ptype: int) -> str:
        try:
            return PacketType(ptype).name
        except ValueError:
            return f"type {ptype}"

    decoder = PacketDecoder()
    raw_seen = b""
    sent_caps = False
    try:
        hello = ProtocolVersion(
            protocol_version=1,
            protocol_revision=0,
            supports_encryption=CLIENT_CRYPTO_MODE,
            compression_algorithms=0,
            compression_threshold=0,
            feature_flags=0,
        )
        writer.write(encode_packet(PacketType.PROTOCOL_VERSION, hello.encode()))
        await writer.drain()
        deadline = time.perf_counter() + timeout_s
        while True:
            left = deadline - time.perf_counter()
            if left <= 0:
                raise TimeoutError
            chunk = await asyncio.wait_for(reader.read(65536), left)
            if not chunk:
                if result.packets:
                    result.status = "acip"
                    result.detail = result.detail or "ACIP server answered, then closed"
                else:
                    result.status = "closed"
                    result.detail = (
                        "the server closed the connection without answering PROTOCOL_VERSION "
                        "(not ACIP, or an ACIP server running --no-encrypt, which drops it)"
                    )
                break
            raw_seen += chunk
            if not result.packets and raw_seen.startswith(SERVER_FULL_PREFIX[: len(raw_seen)]):
                if len(raw_seen) < len(SERVER_FULL_PREFIX):
                    continue
                result.status = "server_full"
                result.answered = True
                result.server_message = raw_seen.split(b"\n", 1)[0].decode("utf-8", "replace")
                result.detail = f"ascii-chat server answered but is full: {result.server_message!r}"
                break
            if not result.packets and not _could_be_acip(raw_seen, magic_bytes):
                result.status = "not_acip"
                result.answered = True
                result.detail = f"something answered, but not ACIP (no ACIP magic); first bytes {raw_seen[:16]!r}"
                if raw_seen.startswith(b"HTTP/"):
                    result.detail += " - an HTTP server: for ascii-chat's WebSocket port use --ws"
                break
            try:
                packets = decoder.feed(chunk)
            except ProtocolError as exc:
                result.status = "not_acip"
                result.answered = True
                result.detail = f"something answered, but not ACIP ({exc.reason}); first bytes {raw_seen[:16]!r}"
                break
            done = False
            for packet in packets:
                result.packets.append(name(packet.type))
                result.answered = True
                if packet.type == PacketType.PROTOCOL_VERSION:
                    reply = ProtocolVersion.decode(packet.payload)
                    result.mode_echo = reply.supports_encryption
                    result.wants_encryption = bool(reply.supports_encryption & 0x01)
                    if not sent_caps:
                        caps = CryptoCapabilities(
                            supported_kex_algorithms=1,
                            supported_auth_algorithms=1,
                            supported_cipher_algorithms=1,
                            requires_verification=0,
                            preferred_kex=1,
                            preferred_auth=0,
                            preferred_cipher=1,
                        )
                        writer.write(encode_packet(PacketType.CRYPTO_CAPABILITIES, caps.encode()))
                        await writer.drain()
                        sent_caps = True
                elif packet.type == PacketType.CRYPTO_PARAMETERS:
                    params = CryptoParameters.decode(packet.payload)
                    result.selected_cipher = params.selected_cipher
                    result.server_identity = bool(params.selected_auth)
                    result.client_keys_required = bool(params.verification_enabled)
                    result.wants_encryption = bool(params.selected_cipher)
                    result.status = "acip"
                    done = True
                elif packet.type == PacketType.CRYPTO_KEY_EXCHANGE_INIT:
                    # 128 bytes = ephemeral key + Ed25519 identity + signature; 32 = anonymous
                    result.server_identity = len(packet.payload) >= 128
                    result.status = "acip"
                    done = True
                elif packet.type == PacketType.ERROR_MESSAGE:
                    try:
                        err = ErrorMessage.decode(packet.payload)
                        result.server_message = f"error {err.code}: {err.message}"
                    except ProtocolError:
                        result.server_message = "unparseable ERROR_MESSAGE"
                    result.status = "acip"
                    if result.mode_echo is None:
                        # refused before echoing PROTOCOL_VERSION: it does not do the encrypted handshake
                        result.wants_encryption = False
                        result.detail = (
                            f"ACIP server refused the encrypted hello, so it does not want encryption "
                            f"(plaintext-only, clients need --no-encrypt): {result.server_message}"
                        )
                    else:
                        result.detail = f"ACIP server answered with an error: {result.server_message}"
                    done = True
                elif packet.type == PacketType.CRYPTO_AUTH_FAILED:
                    result.status = "acip"
                    result.detail = "ACIP server answered AUTH_FAILED to the hello"
                    done = True
                else:
                    # A plaintext server sends its first app packets; that is an answer too.
                    result.status = "acip"
                    done = True
            if done:
                break
    except TimeoutError:
        if result.packets:
            result.status = "acip"
            result.detail = f"ACIP server answered {', '.join(result.packets)}, then went quiet"
        else:
            result.status = "timeout"
            result.detail = f"connected, sent PROTOCOL_VERSION, no answer within {timeout_s:g} s"
    except OSError as exc:
        result.status = "acip" if result.packets else "closed"
        result.detail = result.detail or f"connection failed mid-probe: {exc}"
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass
    result.ms = _ms(start)
    if result.status == "acip" and not result.detail:
        enc = {True: "wants encryption", False: "does not want encryption", None: "encryption unknown"}
        extra = []
        if result.server_identity:
            extra.append("signs with an identity key")
        if result.client_keys_required:
            extra.append("requires client keys")
        result.detail = f"ACIP server answered ({', '.join(result.packets)}); {enc[result.wants_encryption]}" + (
            f"; {', '.join(extra)}" if extra else ""
        )
    return result


async def ws_probe(address: str, port: int, timeout_s: float, path: str = "/") -> WsProbe:
    """WebSocket upgrade asking for subprotocol `acip`; report the first packet the server sends."""
    import aiohttp

    from asciichat_server.protocol.constants import PacketType
    from asciichat_server.protocol.errors import ProtocolError
    from asciichat_server.protocol.packets import PacketDecoder

    host = f"[{address}]" if ":" in address else address
    url = f"ws://{host}:{port}{path}"
    start = time.perf_counter()
    result = WsProbe(url, "error", 0.0)
    timeout = aiohttp.ClientTimeout(total=timeout_s * 2, connect=timeout_s)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.ws_connect(url, protocols=("acip",), autoping=True, max_msg_size=0) as ws,
        ):
            result.status = "upgraded"
            result.http_status = 101
            result.subprotocol = ws.protocol
            try:
                msg = await ws.receive(timeout=timeout_s)
            except TimeoutError:
                result.detail = f"upgraded, but the server sent nothing within {timeout_s:g} s"
                msg = None
            if msg is not None:
                if msg.type == aiohttp.WSMsgType.BINARY:
                    try:
                        packets = PacketDecoder().feed(msg.data)
                    except ProtocolError as exc:
                        packets = []
                        result.detail = f"first message is not an ACIP packet ({exc.reason})"
                    if packets:
                        result.first_packet_type = packets[0].type
                        try:
                            result.first_packet = PacketType(packets[0].type).name
                        except ValueError:
                            result.first_packet = f"type {packets[0].type}"
                elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
                    result.detail = f"server closed the WebSocket at once (code {ws.close_code})"
                else:
                    result.detail = f"first message was {msg.type.name}, not a binary ACIP packet"
    except aiohttp.WSServerHandshakeError as exc:
        result.status = "http_error"
        result.http_status = exc.status
        result.detail = f"upgrade refused: HTTP {exc.status} {exc.message}"
    except aiohttp.ClientConnectorError as exc:
        result.status, result.detail = _classify(exc.os_error)
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientResponseError) as exc:
        # no HTTP answer at all: the peer closed, or sent bytes that are not a status line
        result.status = "not_http"
        what = (
            "closed without an HTTP answer"
            if isinstance(exc, aiohttp.ServerDisconnectedError)
            else ("answered with something that is not HTTP")
        )
        result.detail = f"the server {what}: a raw TCP port? for ascii-chat's TCP port use --acip"
    except Exception as exc:
        result.status, result.detail = _classify(exc)
        if result.status == "error" and isinstance(exc, aiohttp.ClientError):
            result.detail = f"{type(exc).__name__}: {exc}"
    result.ms = _ms(start)
    if result.status == "upgraded" and not result.detail:
        proto = result.subprotocol or "none"
        first = result.first_packet or "nothing"
        result.detail = f"upgraded; subprotocol {proto}; first packet {first}"
        if result.subprotocol != "acip":
            result.detail += " (the server did not echo subprotocol acip; browsers then refuse the connection)"
    return result


def connect_probes(port: int, timeout_s: float) -> list[ConnectProbe]:
    """Connect to 127.0.0.1 and ::1 at the same time (non-blocking sockets, one selector).

    No event loop: `diag ports` without --acip/--ws should not pay for importing asyncio.
    """
    import selectors

    results: dict[str, ConnectProbe] = {}
    sel = selectors.DefaultSelector()
    try:
        for address, family in LOOPBACKS:
            start = time.perf_counter()
            try:
                sock = socket.socket(socket.AF_INET6 if family == "IPv6" else socket.AF_INET, socket.SOCK_STREAM)
            except OSError as exc:
                status, text = _classify(exc)
                results[address] = ConnectProbe(address, family, status, _ms(start), text)
                continue
            sock.setblocking(False)
            err = sock.connect_ex((address, port))
            if err == 0:
                results[address] = ConnectProbe(address, family, "ok", _ms(start))
                _abort(sock)
            elif err in (errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN):
                sel.register(sock, selectors.EVENT_WRITE, (address, family, start))
            else:
                status, text = _classify(OSError(err, os.strerror(err)))
                results[address] = ConnectProbe(address, family, status, _ms(start), text)
                sock.close()
        deadline = time.perf_counter() + timeout_s
        while sel.get_map():
            left = deadline - time.perf_counter()
            if left <= 0:
                break
            for key, _events in sel.select(left):
                sock = key.fileobj
                address, family, start = key.data
                err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err == 0:
                    results[address] = ConnectProbe(address, family, "ok", _ms(start))
                else:
                    status, text = _classify(_os_error(err))
                    results[address] = ConnectProbe(address, family, status, _ms(start), text)
                sel.unregister(sock)
                _abort(sock)
        for key in list(sel.get_map().values()):
            address, family, start = key.data
            results[address] = ConnectProbe(address, family, "timeout", _ms(start), "no answer before the timeout")
            sel.unregister(key.fileobj)
            key.fileobj.close()
    finally:
        sel.close()
    return [results[address] for address, _family in LOOPBACKS]


def _abort(sock: socket.socket) -> None:
    """Close with RST (SO_LINGER 0): a probe must not leave TIME_WAIT behind, or `--watch` would
    count its own probes as the port's TIME_WAIT sockets."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


def _os_error(err: int) -> OSError:
    """OSError with the right subclass (ConnectionRefusedError for ECONNREFUSED, ...)."""
    return OSError(err, os.strerror(err))


async def _app_probes(target: str, port: int, timeout_s: float, acip: bool, ws: bool, ws_path: str):
    import asyncio

    tasks = []
    if acip:
        tasks.append(acip_probe(target, port, timeout_s))
    if ws:
        tasks.append(ws_probe(target, port, timeout_s, ws_path))
    results = list(await asyncio.gather(*tasks))
    acip_result = results.pop(0) if acip else None
    ws_result = results.pop(0) if ws else None
    return acip_result, ws_result


def run_probes(
    port: int, *, timeout_s: float = 1.0, acip: bool = False, ws: bool = False, ws_path: str = "/"
) -> tuple[list[ConnectProbe], AcipProbe | None, WsProbe | None]:
    """Connect to 127.0.0.1 and ::1 (in parallel), then the optional ACIP and WebSocket probes."""
    connects = connect_probes(port, timeout_s)
    if not acip and not ws:
        return connects, None, None
    # talk ACIP / WebSocket over whichever loopback family accepted (IPv4 first, like the C client)
    reachable = [p.address for p in connects if p.status == "ok"]
    target = reachable[0] if reachable else "127.0.0.1"
    import asyncio

    acip_result, ws_result = asyncio.run(_app_probes(target, port, timeout_s, acip, ws, ws_path))
    return connects, acip_result, ws_result


def describe(probe: ConnectProbe, port: int) -> str:
    """'127.0.0.1:27224 ok 0.21 ms'."""
    return f"{format_endpoint(probe.address, port)} {probe.status} {probe.ms:.2f} ms"


__all__ = ["LOOPBACKS", "acip_probe", "connect_probe", "describe", "run_probes", "ws_probe"]
