"""--acip and --ws probes against real answerers on loopback, built from the protocol core."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time

import pytest
from click.testing import CliRunner
from nacl.signing import SigningKey

from asciichat_diag.cli import main
from asciichat_diag.ports.probes import acip_probe, connect_probe, ws_probe

protocol = pytest.importorskip("asciichat_server.protocol.payloads")
from asciichat_server.protocol.constants import PacketType  # noqa: E402
from asciichat_server.protocol.packets import PacketDecoder, encode_packet  # noqa: E402
from asciichat_server.protocol.payloads import (  # noqa: E402
    CryptoParameters,
    ErrorMessage,
    KeyExchangeInit,
    ProtocolVersion,
)


def acip_answerer(*, identity: bool = False, verification: bool = False, seen: list | None = None):
    """A minimal encrypting ACIP server: echoes PROTOCOL_VERSION, answers capabilities, starts kex."""

    signer = SigningKey.generate()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        decoder = PacketDecoder()
        try:
            while data := await reader.read(4096):
                for packet in decoder.feed(data):
                    if seen is not None:
                        seen.append(packet.type)
                    if packet.type == PacketType.PROTOCOL_VERSION:
                        hello = ProtocolVersion.decode(packet.payload)
                        reply = ProtocolVersion(supports_encryption=hello.supports_encryption)
                        writer.write(encode_packet(PacketType.PROTOCOL_VERSION, reply.encode()))
                    elif packet.type == PacketType.CRYPTO_CAPABILITIES:
                        params = CryptoParameters.for_server(identity=identity, encrypt=True, verification=verification)
                        writer.write(encode_packet(PacketType.CRYPTO_PARAMETERS, params.encode()))
                        ephemeral = os.urandom(32)
                        if identity:
                            init = KeyExchangeInit(
                                ephemeral, signer.verify_key.encode(), signer.sign(ephemeral).signature
                            )
                        else:
                            init = KeyExchangeInit(ephemeral)
                        writer.write(encode_packet(PacketType.CRYPTO_KEY_EXCHANGE_INIT, init.encode()))
                await writer.drain()
        finally:
            writer.close()

    return handle


async def start(handler) -> tuple[asyncio.base_events.Server, int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_acip_answerer_wants_encryption() -> None:
    seen: list[int] = []
    server, port = await start(acip_answerer(seen=seen))
    async with server:
        result = await acip_probe("127.0.0.1", port, 2.0)
    assert result.status == "acip" and result.answered
    # the key exchange init may ride in the same segment as the parameters; the probe never answers it
    assert result.packets[:2] == ["PROTOCOL_VERSION", "CRYPTO_PARAMETERS"]
    assert result.packets[2:] in ([], ["CRYPTO_KEY_EXCHANGE_INIT"])
    assert result.wants_encryption is True and result.mode_echo == 0x01 and result.selected_cipher == 1
    assert result.server_identity is False and result.client_keys_required is False
    assert "wants encryption" in result.detail
    assert seen == [PacketType.PROTOCOL_VERSION, PacketType.CRYPTO_CAPABILITIES]  # and never the key exchange


async def test_acip_identity_and_whitelist_reported() -> None:
    server, port = await start(acip_answerer(identity=True, verification=True))
    async with server:
        result = await acip_probe("127.0.0.1", port, 2.0)
    assert result.server_identity is True and result.client_keys_required is True
    assert "identity key" in result.detail and "client keys" in result.detail


async def test_acip_server_full_line() -> None:
    async def full(reader, writer):
        writer.write(b"SERVER_FULL: Maximum client limit reached\n")
        await writer.drain()
        writer.close()

    server, port = await start(full)
    async with server:
        result = await acip_probe("127.0.0.1", port, 2.0)
    assert result.status == "server_full"
    assert result.server_message == "SERVER_FULL: Maximum client limit reached"


async def test_acip_error_message_is_reported() -> None:
    async def refuse(reader, writer):
        await reader.read(4096)
        payload = ErrorMessage(44, "this server runs --no-encrypt").encode()
        writer.write(encode_packet(PacketType.ERROR_MESSAGE, payload))
        await writer.drain()
        writer.close()

    server, port = await start(refuse)
    async with server:
        result = await acip_probe("127.0.0.1", port, 2.0)
    assert result.status == "acip" and result.wants_encryption is False
    assert result.server_message == "error 44: this server runs --no-encrypt"
    assert "does not want encryption" in result.detail


async def test_acip_closed_without_answer() -> None:
    async def drop(reader, writer):
        await reader.read(4096)
        writer.close()

    server, port = await start(drop)
    async with server:
        result = await acip_probe("127.0.0.1", port, 2.0)
    assert result.status == "closed" and not result.answered
    assert "--no-encrypt" in result.detail


async def test_acip_not_acip_and_silent() -> None:
    async def http(reader, writer):
        await reader.read(4096)
        writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        await writer.drain()
        writer.close()

    async def silent(reader, writer):
        await reader.read(4096)
        await asyncio.sleep(5)

    server, port = await start(http)
    async with server:
        result = await acip_probe("127.0.0.1", port, 2.0)
    assert result.status == "not_acip" and "HTTP" in result.detail
    server, port = await start(silent)
    async with server:
        result = await acip_probe("127.0.0.1", port, 0.3)
        assert result.status == "timeout" and 250 <= result.ms < 10000


async def test_connect_probe_states() -> None:
    server, port = await start(acip_answerer())
    async with server:
        ok = await connect_probe("127.0.0.1", "IPv4", port, 1.0)
    refused = await connect_probe("127.0.0.1", "IPv4", port, 1.0)
    assert ok.status == "ok" and ok.ms >= 0
    assert refused.status == "refused" and refused.error == "connection refused"


def test_cli_acip_json(net, port, sockets) -> None:
    with net.ThreadedAsyncServer(acip_answerer(), "127.0.0.1", port):
        result = CliRunner().invoke(
            main, ["ports", str(port), "--acip", "--json", "--any-owner", "--family", "ipv4", "--timeout", "2"]
        )
    data = json.loads(result.output)
    assert data["acip"]["status"] == "acip" and data["acip"]["wants_encryption"] is True
    assert result.exit_code == 0, data["findings"]


def test_cli_acip_against_plain_tcp_is_a_problem(net, port, sockets) -> None:
    sockets.append(net.listener("127.0.0.1", port))  # listens, never accepts nor answers
    result = CliRunner().invoke(
        main, ["ports", str(port), "--acip", "--json", "--any-owner", "--family", "ipv4", "--timeout", "0.3"]
    )
    data = json.loads(result.output)
    assert result.exit_code == 1
    assert data["acip"]["status"] == "timeout"
    assert "acip_not_answering" in {f["code"] for f in data["findings"]}


async def _ws_app(send_first: bytes | None, protocols=("acip",)):
    from aiohttp import web

    async def handler(request):
        ws = web.WebSocketResponse(protocols=protocols)
        await ws.prepare(request)
        if send_first is not None:
            await ws.send_bytes(send_first)
        async for _msg in ws:
            pass
        return ws

    app = web.Application()
    app.router.add_get("/", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, port


async def test_ws_probe_upgrade_subprotocol_and_first_packet() -> None:
    first = encode_packet(PacketType.CRYPTO_PARAMETERS, CryptoParameters().encode())
    runner, port = await _ws_app(first)
    try:
        result = await ws_probe("127.0.0.1", port, 2.0)
    finally:
        await runner.cleanup()
    assert result.status == "upgraded" and result.http_status == 101
    assert result.subprotocol == "acip"
    assert result.first_packet == "CRYPTO_PARAMETERS" and result.first_packet_type == 1101


async def test_ws_probe_without_subprotocol_echo() -> None:
    runner, port = await _ws_app(None, protocols=())
    try:
        result = await ws_probe("127.0.0.1", port, 0.3)
    finally:
        await runner.cleanup()
    assert result.status == "upgraded" and result.subprotocol is None
    assert "sent nothing" in result.detail


async def test_ws_probe_on_plain_http_and_closed_port(net) -> None:
    from aiohttp import web

    app = web.Application()
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        result = await ws_probe("127.0.0.1", port, 1.0)
    finally:
        await runner.cleanup()
    assert result.status == "http_error" and result.http_status == 404
    closed = await ws_probe("127.0.0.1", net.free_port(), 1.0)
    assert closed.status == "refused"


@pytest.mark.ipv6
def test_sync_connect_probes_ok_and_refused(net, port, sockets) -> None:
    from asciichat_diag.ports.probes import connect_probes

    sockets.append(net.listener("::1", port, v6only=True))
    v4, v6 = connect_probes(port, 1.0)
    assert (v4.address, v4.status, v4.error) == ("127.0.0.1", "refused", "connection refused")
    assert (v6.address, v6.status) == ("::1", "ok") and v6.ms < 1000


def test_full_accept_queue_times_out_and_is_flagged(net, port, sockets) -> None:
    from asciichat_diag.ports.gather import gather_port
    from asciichat_diag.ports.probes import connect_probes

    lst = net.listener("127.0.0.1", port)
    lst.listen(0)  # a server that stopped calling accept(): the queue fills, then SYNs are dropped
    sockets.append(lst)
    for _ in range(8):
        c = socket.socket()
        c.settimeout(0.2)
        sockets.append(c)
        try:
            c.connect(("127.0.0.1", port))
        except (TimeoutError, OSError):
            break
    else:
        pytest.skip("accept queue never filled")
    v4, _v6 = connect_probes(port, 0.3)
    assert v4.status == "timeout" and v4.ms >= 250
    report = gather_port(port, expect=[], families="ipv4", timeout_s=0.3)
    finding = next(f for f in report.findings if f.code == "probe_failed")
    assert "does not accept" in finding.message and not report.ok
    (lst_entry,) = [e for e in report.sockets if e.state == "LISTEN"]
    assert lst_entry.send_q == 0 and lst_entry.recv_q >= 1  # listen(0), and clients queued
    full = next(f for f in report.findings if f.code == "accept_queue_full")
    assert full.severity == "problem" and "not calling accept()" in full.message


def test_connect_probes_leave_no_time_wait(net, port, sockets) -> None:
    from asciichat_diag.ports.probes import connect_probes
    from asciichat_diag.ports.sockdiag import dump_tcp

    lst = net.listener("127.0.0.1", port)
    sockets.append(lst)
    for _ in range(3):
        assert connect_probes(port, 1.0)[0].status == "ok"
    time.sleep(0.05)
    # a plain close() would leave FIN_WAIT2 then TIME_WAIT on our side and CLOSE_WAIT on the
    # server's: --watch would count its own probes; the RST leaves nothing
    states = [s.state for s in dump_tcp(port) if s.state != "LISTEN"]
    assert states == []
