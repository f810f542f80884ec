"""Full handshakes between our ServerConnection and ClientConnection, in memory, and every way they fail."""

from __future__ import annotations

import struct

import pytest
from nacl.signing import SigningKey

from asciichat_server.protocol.connection import (
    ClientConnection,
    ClientSecurity,
    ConnectionState,
    ServerConnection,
    ServerSecurity,
)
from asciichat_server.protocol.constants import AuthFailure, PacketType
from asciichat_server.protocol.crc import crc32c
from asciichat_server.protocol.errors import ProtocolError
from asciichat_server.protocol.events import AuthRejected, Event, HandshakeComplete, PacketReceived
from asciichat_server.protocol.packets import Packet, decode_packet, encode_packet
from asciichat_server.protocol.payloads import (
    AsciiFrame,
    ClientCapabilities,
    CryptoParameters,
    ErrorMessage,
    KeyExchangeInit,
    ProtocolVersion,
)
from asciichat_server.protocol.session import REPLAY_WINDOW, ReceiveCipher

CAPS = ClientCapabilities(color_level=3, width=80, height=24, term_type="xterm").encode()
SERVER_ID = SigningKey(bytes([0x55] * 32))
CLIENT_A = SigningKey(bytes([0x66] * 32))
CLIENT_B = SigningKey(bytes([0x77] * 32))


def feed(conn: ServerConnection | ClientConnection, wire: bytes, chunk: int | None = None) -> list[Event]:
    if conn.transport == "ws":
        return conn.receive_message(wire)
    if chunk is None:
        return conn.receive_data(wire)
    events: list[Event] = []
    for i in range(0, len(wire), chunk):
        events += conn.receive_data(wire[i : i + chunk])
    return events


def pump(
    server: ServerConnection, client: ClientConnection, chunk: int | None = None, rounds: int = 50
) -> tuple[list[Event], list[Event]]:
    """Exchange queued packets both ways until both sides are quiet; return (server_events, client_events)."""
    server_events: list[Event] = []
    client_events: list[Event] = []
    for _ in range(rounds):
        to_server = client.data_to_send()
        for wire in to_server:
            server_events += feed(server, wire, chunk)
        to_client = server.data_to_send()
        for wire in to_client:
            client_events += feed(client, wire, chunk)
        if not to_server and not to_client:
            return server_events, client_events
    raise AssertionError("connections kept talking")


def _connect(
    server_sec: ServerSecurity, client_sec: ClientSecurity, transport: str = "tcp", chunk: int | None = None
) -> tuple[ServerConnection, ClientConnection, list, list]:
    server = ServerConnection(server_sec, transport)
    client = ClientConnection(client_sec, transport)
    server.start()
    client.start()
    server_events, client_events = pump(server, client, chunk)
    return server, client, server_events, client_events


def _open_session(server: ServerConnection, client: ClientConnection) -> list:
    """The client's first application packet (CLIENT_CAPABILITIES) — the point where the server knows the key."""
    client.send(PacketType.CLIENT_CAPABILITIES, CAPS)
    server_events, _ = pump(server, client)
    return server_events


def _roundtrip(server: ServerConnection, client: ClientConnection) -> None:
    """Application packets flow both ways and are wrapped in ENCRYPTED exactly when the session is encrypted."""
    frame = AsciiFrame(80, 24, b"hello\x1b[0m").encode()
    server.send(PacketType.ASCII_FRAME, frame)
    wires = server.data_to_send()
    assert all(
        decode_packet(w).type == (PacketType.ENCRYPTED if server.encrypted else PacketType.ASCII_FRAME) for w in wires
    )
    events = []
    for w in wires:
        events += feed(client, w)
    assert events[-1] == PacketReceived(Packet(PacketType.ASCII_FRAME, frame))
    client.send(PacketType.PING)
    server_events, _ = pump(server, client)
    assert server_events == [PacketReceived(Packet(PacketType.PING, b""))]


# ------------------------------------------------------------------------------- plaintext


def test_plaintext_tcp_client_capabilities_first() -> None:
    server = ServerConnection(ServerSecurity(), "tcp")
    client = ClientConnection(ClientSecurity(encrypt=False), "tcp")
    client.start()
    assert client.state is ConnectionState.OPEN
    client.send(PacketType.CLIENT_CAPABILITIES, CAPS)
    server_events, _ = pump(server, client)
    assert server_events == [
        HandshakeComplete(False, None, None),
        PacketReceived(Packet(PacketType.CLIENT_CAPABILITIES, CAPS)),
    ]
    assert server.state is ConnectionState.OPEN and not server.encrypted
    _roundtrip(server, client)


def test_plaintext_client_refused_when_password_or_key_list_required(password_key: bytes) -> None:
    for security, flags in (
        (ServerSecurity(password_key=password_key), AuthFailure.PASSWORD_REQUIRED),
        (ServerSecurity(client_keys=frozenset({bytes(CLIENT_A.verify_key)})), AuthFailure.CLIENT_KEY_REQUIRED),
    ):
        server = ServerConnection(security, "tcp")
        events = server.receive_data(encode_packet(PacketType.CLIENT_CAPABILITIES, CAPS))
        assert events == [AuthRejected(int(flags))]
        assert server.state is ConnectionState.CLOSED
        assert [decode_packet(w) for w in server.data_to_send()] == [
            Packet(PacketType.CRYPTO_AUTH_FAILED, bytes([flags]) + bytes(7))
        ]


def test_no_encrypt_server_refuses_protocol_version() -> None:
    server = ServerConnection(ServerSecurity(encrypt=False), "tcp")
    with pytest.raises(ProtocolError, match="without encryption") as info:
        server.receive_data(encode_packet(PacketType.PROTOCOL_VERSION, ProtocolVersion().encode()))
    assert info.value.error_code == 44
    assert server.state is ConnectionState.ERROR


@pytest.mark.parametrize("mode", [0x00, 0x04, 0x81])
def test_unusable_crypto_modes_refused(mode: int) -> None:
    server = ServerConnection(ServerSecurity(), "tcp")
    with pytest.raises(ProtocolError, match="crypto mode"):
        server.receive_data(
            encode_packet(PacketType.PROTOCOL_VERSION, ProtocolVersion(supports_encryption=mode).encode())
        )


def test_crypto_no_encryption_gets_auth_failed_zero() -> None:
    server = ServerConnection(ServerSecurity(), "tcp")
    server.receive_data(encode_packet(PacketType.PROTOCOL_VERSION, ProtocolVersion().encode()))
    server.data_to_send()
    assert server.receive_data(encode_packet(PacketType.CRYPTO_NO_ENCRYPTION)) == [AuthRejected(0)]
    assert server.data_to_send() == [encode_packet(PacketType.CRYPTO_AUTH_FAILED, bytes(8))]
    assert server.receive_data(encode_packet(PacketType.PING)) == []  # CLOSED ignores the rest


# ------------------------------------------------------------------------------- encrypted, both key variants


@pytest.mark.parametrize("variant", ["c41", "head"])
@pytest.mark.parametrize("chunk", [None, 1])
def test_encrypted_handshake_detects_the_client_key_variant(variant: str, chunk: int | None) -> None:
    server, client, server_events, client_events = _connect(
        ServerSecurity(), ClientSecurity(key_variant=variant), chunk=chunk
    )
    assert client_events == [HandshakeComplete(True, variant, None)]
    # Without a password the server learns the variant from the client's first ENCRYPTED packet.
    assert server_events == [] and server.state is ConnectionState.HANDSHAKE
    client.send(PacketType.CLIENT_CAPABILITIES, CAPS)
    wire = client.data_to_send()[0]
    nonce_counter = decode_packet(wire).payload[16:24]
    assert nonce_counter == (1).to_bytes(8, "little" if variant == "c41" else "big")
    events = feed(server, wire, chunk)
    assert events == [
        HandshakeComplete(True, variant, None),
        PacketReceived(Packet(PacketType.CLIENT_CAPABILITIES, CAPS)),
    ]
    assert server.key_variant == variant and server.state is ConnectionState.OPEN
    _roundtrip(server, client)


def test_server_reply_echoes_the_client_mode_byte() -> None:
    server = ServerConnection(ServerSecurity(), "tcp")
    server.receive_data(encode_packet(PacketType.PROTOCOL_VERSION, ProtocolVersion(supports_encryption=3).encode()))
    reply = decode_packet(server.data_to_send()[0])
    assert ProtocolVersion.decode(reply.payload).supports_encryption == 3


def test_application_packets_wait_for_the_key_then_go_encrypted() -> None:
    server, client, _, _ = _connect(ServerSecurity(), ClientSecurity())
    server.send(PacketType.SERVER_STATE, bytes(32))
    assert server.data_to_send() == []  # variant unknown: nothing encrypted yet
    client.send(PacketType.CLIENT_CAPABILITIES, CAPS)
    _, client_events = pump(server, client)
    assert PacketReceived(Packet(PacketType.SERVER_STATE, bytes(32))) in client_events


# ------------------------------------------------------------------------------- password


@pytest.mark.parametrize("variant", ["c41", "head"])
def test_password_right(variant: str, password_key: bytes) -> None:
    server, client, server_events, client_events = _connect(
        ServerSecurity(password_key=password_key), ClientSecurity(password_key=password_key, key_variant=variant)
    )
    # The HMAC covers the session key, so the variant is known at SERVER_AUTH_RESP time.
    assert server_events == [HandshakeComplete(True, variant, None)]
    assert client_events == [HandshakeComplete(True, variant, None)]
    _roundtrip(server, client)


def test_password_wrong(password_key: bytes, wrong_password_key: bytes) -> None:
    server, client, server_events, client_events = _connect(
        ServerSecurity(password_key=password_key), ClientSecurity(password_key=wrong_password_key)
    )
    assert server_events == [AuthRejected(AuthFailure.PASSWORD_INCORRECT)]
    assert client_events == [AuthRejected(AuthFailure.PASSWORD_INCORRECT)]
    assert server.state is ConnectionState.CLOSED and client.state is ConnectionState.CLOSED


def test_password_missing_on_client(password_key: bytes) -> None:
    server = ServerConnection(ServerSecurity(password_key=password_key), "tcp")
    client = ClientConnection(ClientSecurity(), "tcp")
    client.start()
    with pytest.raises(ProtocolError, match="requires a password"):
        pump(server, client)


def test_wrong_password_with_key_list_sets_both_flags(password_key: bytes, wrong_password_key: bytes) -> None:
    security = ServerSecurity(password_key=password_key, client_keys=frozenset({bytes(CLIENT_A.verify_key)}))
    _, _, server_events, _ = _connect(security, ClientSecurity(password_key=wrong_password_key, identity=CLIENT_A))
    assert server_events == [AuthRejected(AuthFailure.PASSWORD_INCORRECT | AuthFailure.CLIENT_KEY_REQUIRED)]


def test_password_and_key_list_both_satisfied(password_key: bytes) -> None:
    security = ServerSecurity(password_key=password_key, client_keys=frozenset({bytes(CLIENT_A.verify_key)}))
    server, client, server_events, _ = _connect(
        security, ClientSecurity(password_key=password_key, identity=CLIENT_A, key_variant="head")
    )
    assert server_events == [HandshakeComplete(True, "head", bytes(CLIENT_A.verify_key))]
    _roundtrip(server, client)


# ------------------------------------------------------------------------------- server identity


def test_identity_pinned_right() -> None:
    pin = bytes(SERVER_ID.verify_key)
    server, client, _, client_events = _connect(ServerSecurity(identity=SERVER_ID), ClientSecurity(server_key=pin))
    assert client_events == [HandshakeComplete(True, "c41", pin)]
    _open_session(server, client)
    _roundtrip(server, client)


def test_identity_sent_as_128_byte_init_and_parameters_announce_it() -> None:
    server = ServerConnection(ServerSecurity(identity=SERVER_ID), "tcp")
    server.receive_data(encode_packet(PacketType.PROTOCOL_VERSION, ProtocolVersion().encode()))
    server.receive_data(encode_packet(PacketType.CRYPTO_CAPABILITIES, bytes.fromhex("00010001000100010001")))
    _, params, init = (decode_packet(w) for w in server.data_to_send())
    assert CryptoParameters.decode(params.payload).signature_size == 64
    assert len(init.payload) == 128
    assert KeyExchangeInit.decode(init.payload).identity_key == bytes(SERVER_ID.verify_key)


def test_identity_pinned_wrong_client_refuses() -> None:
    server = ServerConnection(ServerSecurity(identity=SERVER_ID), "tcp")
    client = ClientConnection(ClientSecurity(server_key=bytes(CLIENT_B.verify_key)), "tcp")
    client.start()
    with pytest.raises(ProtocolError, match="does not match the pinned"):
        pump(server, client)
    assert client.state is ConnectionState.ERROR


def test_identity_pinned_but_server_has_none() -> None:
    client = ClientConnection(ClientSecurity(server_key=bytes(SERVER_ID.verify_key)), "tcp")
    server = ServerConnection(ServerSecurity(), "tcp")
    client.start()
    with pytest.raises(ProtocolError, match="presented no identity"):
        pump(server, client)


def test_client_hello_with_a_key_we_do_not_hold_is_refused() -> None:
    server = ServerConnection(ServerSecurity(identity=SERVER_ID), "tcp")
    server.receive_data(encode_packet(PacketType.PROTOCOL_VERSION, ProtocolVersion().encode()))
    server.receive_data(encode_packet(PacketType.CRYPTO_CLIENT_HELLO, bytes(SERVER_ID.verify_key)))  # ours: fine
    with pytest.raises(ProtocolError, match="CLIENT_HELLO"):
        server.receive_data(encode_packet(PacketType.CRYPTO_CLIENT_HELLO, bytes(CLIENT_B.verify_key)))


def test_forged_identity_signature_rejected_by_client() -> None:
    server = ServerConnection(ServerSecurity(identity=SERVER_ID), "tcp")
    client = ClientConnection(ClientSecurity(), "tcp")
    client.start()
    for w in client.data_to_send():
        server.receive_data(w)
    for w in server.data_to_send():
        client.receive_data(w)
    for w in client.data_to_send():
        server.receive_data(w)
    params, init = server.data_to_send()
    client.receive_data(params)
    payload = bytearray(decode_packet(init).payload)
    payload[100] ^= 1
    with pytest.raises(ProtocolError, match="signature"):
        client.receive_data(encode_packet(PacketType.CRYPTO_KEY_EXCHANGE_INIT, bytes(payload)))


# ------------------------------------------------------------------------------- client-key allow-list


@pytest.mark.parametrize("variant", ["c41", "head"])
def test_allow_list_listed(variant: str) -> None:
    security = ServerSecurity(client_keys=frozenset({bytes(CLIENT_A.verify_key)}), signature_auth_variant=variant)
    server, client, server_events, client_events = _connect(
        security, ClientSecurity(identity=CLIENT_A, key_variant=variant)
    )
    assert server_events == [HandshakeComplete(True, variant, bytes(CLIENT_A.verify_key))]
    assert client_events == [HandshakeComplete(True, variant, None)]
    _roundtrip(server, client)


def test_allow_list_not_listed() -> None:
    security = ServerSecurity(client_keys=frozenset({bytes(CLIENT_A.verify_key)}))
    _, _, server_events, client_events = _connect(security, ClientSecurity(identity=CLIENT_B))
    assert server_events == [AuthRejected(AuthFailure.CLIENT_KEY_REJECTED)]
    assert client_events == [AuthRejected(AuthFailure.CLIENT_KEY_REJECTED)]


def test_allow_list_client_without_key() -> None:
    security = ServerSecurity(client_keys=frozenset({bytes(CLIENT_A.verify_key)}))
    client = ClientConnection(ClientSecurity(), "tcp")
    client.start()
    with pytest.raises(ProtocolError, match="requires a client key"):
        pump(ServerConnection(security, "tcp"), client)


def test_allow_list_bad_challenge_signature() -> None:
    security = ServerSecurity(client_keys=frozenset({bytes(CLIENT_A.verify_key)}))
    server = ServerConnection(security, "tcp")
    client = ClientConnection(ClientSecurity(identity=CLIENT_A), "tcp")
    client.start()
    for _ in range(3):  # PROTOCOL_VERSION, CRYPTO_CAPABILITIES, KEY_EXCHANGE_RESP rounds; then AUTH_RESPONSE
        for w in client.data_to_send():
            server.receive_data(w)
        for w in server.data_to_send():
            client.receive_data(w)
    (auth_response,) = client.data_to_send()
    payload = bytearray(decode_packet(auth_response).payload)
    payload[0] ^= 0x80
    events = server.receive_data(encode_packet(PacketType.CRYPTO_AUTH_RESPONSE, bytes(payload)))
    assert events == [AuthRejected(AuthFailure.SIGNATURE_INVALID)]


def test_unrequested_client_identity_is_reported_when_its_signature_verifies() -> None:
    # No password, no list: HANDSHAKE_COMPLETE, and the identity the client signed with is passed up.
    server, client, _, _ = _connect(ServerSecurity(identity=SERVER_ID), ClientSecurity(identity=CLIENT_A))
    events = _open_session(server, client)
    assert events[0] == HandshakeComplete(True, "c41", bytes(CLIENT_A.verify_key))


# ------------------------------------------------------------------------------- violations after the handshake


def _established(variant: str = "c41") -> tuple[ServerConnection, ClientConnection]:
    server, client, _, _ = _connect(ServerSecurity(), ClientSecurity(key_variant=variant))
    _open_session(server, client)
    return server, client


def _reframe(payload: bytes) -> bytes:
    return encode_packet(PacketType.ENCRYPTED, payload)


def test_tampered_mac_rejected() -> None:
    server, client = _established()
    client.send(PacketType.PING)
    (wire,) = client.data_to_send()
    payload = bytearray(decode_packet(wire).payload)
    payload[30] ^= 0x01  # inside the MAC; outer CRC recomputed so only the MAC catches it
    with pytest.raises(ProtocolError, match="MAC") as info:
        server.receive_data(_reframe(bytes(payload)))
    assert info.value.error_code == 44
    assert server.state is ConnectionState.ERROR
    with pytest.raises(ProtocolError):
        server.receive_data(wire)  # ERROR is final


def test_tampered_first_packet_matches_no_variant() -> None:
    server, client, _, _ = _connect(ServerSecurity(), ClientSecurity())
    client.send(PacketType.CLIENT_CAPABILITIES, CAPS)
    (wire,) = client.data_to_send()
    payload = bytearray(decode_packet(wire).payload)
    payload[-1] ^= 0x01
    with pytest.raises(ProtocolError, match="neither"):
        server.receive_data(_reframe(bytes(payload)))


def test_replayed_counter_rejected() -> None:
    server, client = _established("head")
    client.send(PacketType.PING)
    (wire,) = client.data_to_send()
    assert server.receive_data(wire) == [PacketReceived(Packet(PacketType.PING, b""))]
    with pytest.raises(ProtocolError, match="replayed"):
        server.receive_data(wire)


def test_reordered_counters_within_the_window_are_accepted_once() -> None:
    # Both C peers encrypt outside their send lock, so counters may arrive slightly out of order.
    server, client = _established()
    client.send(PacketType.PING)
    client.send(PacketType.PONG)
    first, second = client.data_to_send()
    assert server.receive_data(second) == [PacketReceived(Packet(PacketType.PONG, b""))]
    assert server.receive_data(first) == [PacketReceived(Packet(PacketType.PING, b""))]
    with pytest.raises(ProtocolError, match="replayed"):
        server.receive_data(first)


def test_counter_older_than_the_replay_window_rejected() -> None:
    server, client = _established()
    client.send(PacketType.PING)
    (old,) = client.data_to_send()
    for _ in range(REPLAY_WINDOW + 1):
        client.send(PacketType.PONG)
    for wire in client.data_to_send():
        server.receive_data(wire)
    with pytest.raises(ProtocolError, match="older than the replay window"):
        server.receive_data(old)


def test_same_counter_different_packet_is_not_a_replay() -> None:
    # c41's nonce counter is incremented without a lock; two authentic packets can share a counter.
    server, client = _established()
    sender = client._session._sender  # type: ignore[union-attr]
    client.send(PacketType.PING)
    (a,) = client.data_to_send()
    sender.counter -= 1
    client.send(PacketType.PONG)
    (b,) = client.data_to_send()
    assert decode_packet(a).payload[:24] == decode_packet(b).payload[:24]
    server.receive_data(a)
    assert server.receive_data(b) == [PacketReceived(Packet(PacketType.PONG, b""))]
    # Each of the two is still refused when replayed (checked on fresh receivers of the same state).
    for replay in (a, b):
        receiver = ReceiveCipher(server._session.key)  # type: ignore[union-attr]
        receiver.open(decode_packet(a).payload)
        receiver.open(decode_packet(b).payload)
        with pytest.raises(ProtocolError, match="replayed ENCRYPTED packet"):
            receiver.open(decode_packet(replay).payload)


def test_plaintext_after_handshake_rejected() -> None:
    server, _ = _established()
    with pytest.raises(ProtocolError, match="plaintext PING"):
        server.receive_data(encode_packet(PacketType.PING))


def test_plaintext_after_handshake_complete_before_first_encrypted_rejected_on_tcp() -> None:
    server, _, _, _ = _connect(ServerSecurity(), ClientSecurity())
    with pytest.raises(ProtocolError, match="plaintext CLIENT_CAPABILITIES"):
        server.receive_data(encode_packet(PacketType.CLIENT_CAPABILITIES, CAPS))


def test_inner_packet_crc_checked() -> None:
    server, client = _established()
    session = client._session
    assert session is not None
    inner = bytearray(encode_packet(PacketType.STREAM_START, b"\0\0\0\x01"))
    inner[14:18] = struct.pack(">I", crc32c(b"\0\0\0\x02"))
    sealed = session._sender.seal(bytes(inner))  # type: ignore[union-attr]
    with pytest.raises(ProtocolError, match="inner packet: CRC mismatch"):
        server.receive_data(sealed)


def test_inner_handshake_type_rejected() -> None:
    server, client = _established()
    sealed = client._session._sender.seal(encode_packet(PacketType.CRYPTO_HANDSHAKE_COMPLETE))  # type: ignore[union-attr]
    with pytest.raises(ProtocolError, match="inside ENCRYPTED"):
        server.receive_data(sealed)


def test_oversize_encrypted_plaintext_rejected_before_decrypting() -> None:
    server, _ = _established()
    # The header alone is refused: nothing larger than 1 MiB + nonce + MAC can be valid once encrypted.
    with pytest.raises(ProtocolError, match="exceeds"):
        server.receive_data(encode_packet(PacketType.ENCRYPTED, bytes(1024 * 1024 + 41))[:22])


def test_unauthenticated_peer_cannot_announce_a_large_payload() -> None:
    server = ServerConnection(ServerSecurity(), "tcp")
    with pytest.raises(ProtocolError, match="exceeds"):
        server.receive_data(encode_packet(PacketType.PROTOCOL_VERSION, bytes(65537))[:22])


def test_plaintext_session_allows_large_frames_right_after_the_first_packet() -> None:
    frame = AsciiFrame(80, 24, b"x" * 300_000).encode()  # bigger than the handshake limit
    server = ServerConnection(ServerSecurity(), "tcp")
    chunk = encode_packet(PacketType.CLIENT_CAPABILITIES, CAPS) + encode_packet(PacketType.IMAGE_FRAME, frame)
    events = server.receive_data(chunk)
    assert [type(e) for e in events] == [HandshakeComplete, PacketReceived, PacketReceived]
    assert events[2] == PacketReceived(Packet(PacketType.IMAGE_FRAME, frame))


def test_send_refuses_what_cannot_be_encrypted() -> None:
    server, _ = _established()
    with pytest.raises(ValueError):
        server.send(PacketType.ASCII_FRAME, bytes(1024 * 1024))
    with pytest.raises(ValueError):
        server.send(PacketType.CRYPTO_HANDSHAKE_COMPLETE)


@pytest.mark.parametrize("encrypted", [True, False])
def test_fail_sends_error_message_encrypted_when_the_session_is(encrypted: bool) -> None:
    if encrypted:
        server, client = _established()
    else:
        server = ServerConnection(ServerSecurity(), "tcp")
        client = ClientConnection(ClientSecurity(encrypt=False), "tcp")
        client.start()
        _open_session(server, client)
    server.fail("Protocol violation: bad STREAM_START")
    assert server.state is ConnectionState.ERROR
    (wire,) = server.data_to_send()
    assert decode_packet(wire).type == (PacketType.ENCRYPTED if encrypted else PacketType.ERROR_MESSAGE)
    events = [e for e in feed(client, wire) if isinstance(e, PacketReceived)]
    assert ErrorMessage.decode(events[-1].packet.payload) == ErrorMessage(44, "Protocol violation: bad STREAM_START")
    server.send(PacketType.PING)
    server.fail("again")
    assert server.data_to_send() == []  # ERROR: no more application traffic, one ERROR_MESSAGE only


def test_fail_during_handshake_is_plaintext() -> None:
    server = ServerConnection(ServerSecurity(), "tcp")
    with pytest.raises(ProtocolError) as info:
        server.receive_data(encode_packet(PacketType.PING))
    server.fail(info.value.reason, info.value.error_code)
    (wire,) = server.data_to_send()
    msg = ErrorMessage.decode(decode_packet(wire).payload)
    assert msg.code == 44 and "PROTOCOL_VERSION or CLIENT_CAPABILITIES" in msg.message


# ------------------------------------------------------------------------------- rekey


@pytest.mark.parametrize("variant", ["c41", "head"])
def test_client_initiated_rekey(variant: str) -> None:
    server, client = _established(variant)
    old_key = server._session.key  # type: ignore[union-attr]
    client.start_rekey()
    (request,) = client.data_to_send()
    assert decode_packet(request).type == PacketType.CRYPTO_REKEY_REQUEST
    # What the server sent before the request is sealed under the old key.
    server.send(PacketType.PONG)
    events = server.receive_data(request)
    assert events == []
    pong, response = server.data_to_send()
    # Once it has answered, it holds application packets: the client switches on reading the response.
    server.send(PacketType.SERVER_STATE, bytes(32))
    assert server.data_to_send() == []
    client.receive_data(pong)
    client.receive_data(response)
    (complete,) = client.data_to_send()
    complete_packet = decode_packet(complete)
    assert complete_packet.type == PacketType.CRYPTO_REKEY_COMPLETE
    assert len(complete_packet.payload) == (41 if variant == "c41" else 1)
    server.receive_data(complete)
    assert server.rekeys == 1 and client.rekeys == 1
    assert server._session.key != old_key  # type: ignore[union-attr]
    (held,) = server.data_to_send()
    client._session._old_receiver = None  # type: ignore[union-attr]  # prove it is sealed under the new key
    assert client.receive_data(held) == [PacketReceived(Packet(PacketType.SERVER_STATE, bytes(32)))]
    _roundtrip(server, client)


def test_rekey_complete_under_a_wrong_key_rejected() -> None:
    server, client = _established()
    client.start_rekey()
    pump(server, client)  # the full exchange completes
    client.start_rekey()
    for w in client.data_to_send():
        server.receive_data(w)
    with pytest.raises(ProtocolError, match="REKEY_COMPLETE"):
        server.receive_data(encode_packet(PacketType.CRYPTO_REKEY_COMPLETE, bytes(41)))


def test_server_never_accepts_a_rekey_response_or_stray_complete() -> None:
    server, _ = _established()
    with pytest.raises(ProtocolError, match="never starts a rekey"):
        server.receive_data(encode_packet(PacketType.CRYPTO_REKEY_RESPONSE, bytes(32)))
    server, _ = _established()
    with pytest.raises(ProtocolError, match="without a rekey"):
        server.receive_data(encode_packet(PacketType.CRYPTO_REKEY_COMPLETE, b"\0"))


# ------------------------------------------------------------------------------- WebSocket role


@pytest.mark.parametrize("variant", ["c41", "head"])
def test_websocket_server_speaks_first(variant: str) -> None:
    server = ServerConnection(ServerSecurity(), "ws")
    server.start()
    params, init = (decode_packet(w) for w in server.data_to_send())
    assert params.type == PacketType.CRYPTO_PARAMETERS
    assert init.type == PacketType.CRYPTO_KEY_EXCHANGE_INIT and len(init.payload) == 32
    client = ClientConnection(ClientSecurity(key_variant=variant), "ws")
    client.start()
    # A WS peer may send application packets before the handshake: delivered, not refused.
    early = server.receive_message(encode_packet(PacketType.CLIENT_CAPABILITIES, CAPS))
    assert early == [PacketReceived(Packet(PacketType.CLIENT_CAPABILITIES, CAPS))]
    client.receive_message(encode_packet(params.type, params.payload))
    client.receive_message(encode_packet(init.type, init.payload))
    server_events, client_events = pump(server, client)
    assert client_events == [HandshakeComplete(True, variant, None)]
    server_events += _open_session(server, client)
    assert server_events[0] == HandshakeComplete(True, variant, None)
    _roundtrip(server, client)


def test_websocket_server_with_identity_still_sends_32_byte_init() -> None:
    server = ServerConnection(ServerSecurity(identity=SERVER_ID), "ws")
    server.start()
    _, init = (decode_packet(w) for w in server.data_to_send())
    assert len(init.payload) == 32


def test_websocket_password(password_key: bytes) -> None:
    server, client, server_events, _ = _connect(
        ServerSecurity(password_key=password_key), ClientSecurity(password_key=password_key), "ws"
    )
    assert server_events == [HandshakeComplete(True, "c41", None)]
    _roundtrip(server, client)


def test_plaintext_websocket_mode_never_offers_a_key_exchange() -> None:
    server = ServerConnection(ServerSecurity(encrypt=False), "ws")
    server.start()
    assert server.data_to_send() == [] and server.state is ConnectionState.OPEN
    client = ClientConnection(ClientSecurity(encrypt=False), "ws")
    client.start()
    server_events = _open_session(server, client)
    assert server_events[0] == HandshakeComplete(False, None, None)
    _roundtrip(server, client)


def test_websocket_message_must_be_exactly_one_packet() -> None:
    server = ServerConnection(ServerSecurity(encrypt=False), "ws")
    server.start()
    with pytest.raises(ProtocolError):
        server.receive_message(encode_packet(PacketType.PING) + encode_packet(PacketType.PING))


def test_websocket_plaintext_after_key_confirmed_rejected() -> None:
    server, client, _, _ = _connect(ServerSecurity(), ClientSecurity(), "ws")
    _open_session(server, client)
    with pytest.raises(ProtocolError, match="plaintext"):
        server.receive_message(encode_packet(PacketType.PING))


# ------------------------------------------------------------------------------- configuration


def test_security_configuration_is_validated(password_key: bytes) -> None:
    with pytest.raises(ValueError):
        ServerSecurity(encrypt=False, password_key=password_key)
    with pytest.raises(ValueError):
        ServerSecurity(signature_auth_variant="v2")
    with pytest.raises(ValueError):
        ServerSecurity(client_keys=frozenset({b"short"}))
    with pytest.raises(ValueError):
        ClientSecurity(key_variant="x")
    with pytest.raises(ValueError):
        ServerConnection(ServerSecurity(), "udp")  # type: ignore[arg-type]


@pytest.mark.parametrize("variant", ["c41", "head"])
def test_rekey_before_the_first_encrypted_packet_reveals_the_variant(variant: str) -> None:
    # Found by the stateful fuzzer: the server may not know the client's variant yet when a rekey starts.
    server, client, _, _ = _connect(ServerSecurity(), ClientSecurity(key_variant=variant))
    assert server.state is ConnectionState.HANDSHAKE
    client.start_rekey()
    server_events, _ = pump(server, client)
    assert server_events == [HandshakeComplete(True, variant, None)]
    assert server.key_variant == variant and server.rekeys == 1
    _roundtrip(server, client)


# ------------------------------------------------------------------------------- client role against scripted servers


def _client_after_version(security: ClientSecurity | None = None) -> ClientConnection:
    client = ClientConnection(security or ClientSecurity(), "tcp")
    client.start()
    (version,) = client.data_to_send()
    assert decode_packet(version) == Packet(PacketType.PROTOCOL_VERSION, ProtocolVersion().encode())
    client.receive_data(version)  # a correct server echoes the same bytes
    (caps,) = client.data_to_send()
    assert decode_packet(caps).type == PacketType.CRYPTO_CAPABILITIES
    return client


def test_client_sends_mode_full_when_it_has_a_password_or_key(password_key: bytes) -> None:
    for security in (ClientSecurity(password_key=password_key), ClientSecurity(identity=CLIENT_A)):
        client = ClientConnection(security, "tcp")
        client.start()
        (version,) = client.data_to_send()
        assert ProtocolVersion.decode(decode_packet(version).payload).supports_encryption == 0x03


def test_client_refuses_a_server_that_does_not_echo_its_mode() -> None:
    client = ClientConnection(ClientSecurity(), "tcp")
    client.start()
    with pytest.raises(ProtocolError, match="crypto mode"):
        client.receive_data(encode_packet(PacketType.PROTOCOL_VERSION, ProtocolVersion(supports_encryption=3).encode()))


@pytest.mark.parametrize(
    ("field", "value", "needle"), [("selected_kex", 2, "key exchange"), ("selected_cipher", 0, "cipher")]
)
def test_client_refuses_parameters_it_cannot_use(field: str, value: int, needle: str) -> None:
    client = _client_after_version()
    params = CryptoParameters(**{field: value}).encode()
    with pytest.raises(ProtocolError, match=needle):
        client.receive_data(encode_packet(PacketType.CRYPTO_PARAMETERS, params))


def test_client_refuses_128_byte_init_not_announced() -> None:
    client = _client_after_version()
    client.receive_data(encode_packet(PacketType.CRYPTO_PARAMETERS, CryptoParameters().encode()))
    from asciichat_server.protocol.crypto import signed_key_exchange_init

    init = signed_key_exchange_init(bytes(range(32)), SERVER_ID).encode()
    with pytest.raises(ProtocolError, match="announced no identity"):
        client.receive_data(encode_packet(PacketType.CRYPTO_KEY_EXCHANGE_INIT, init))


def test_client_passes_error_message_during_handshake_to_the_application() -> None:
    client = _client_after_version()
    err = ErrorMessage(44, "go away").encode()
    assert client.receive_data(encode_packet(PacketType.ERROR_MESSAGE, err)) == [
        PacketReceived(Packet(PacketType.ERROR_MESSAGE, err))
    ]


def test_client_rejects_a_forged_server_auth_resp(password_key: bytes) -> None:
    server = ServerConnection(ServerSecurity(password_key=password_key), "tcp")
    client = ClientConnection(ClientSecurity(password_key=password_key), "tcp")
    client.start()
    for _ in range(4):
        for w in client.data_to_send():
            server.receive_data(w)
        out = server.data_to_send()
        if out and decode_packet(out[-1]).type == PacketType.CRYPTO_SERVER_AUTH_RESP:
            for w in out[:-1]:
                client.receive_data(w)
            break
        for w in out:
            client.receive_data(w)
    with pytest.raises(ProtocolError, match="failed to prove"):
        client.receive_data(encode_packet(PacketType.CRYPTO_SERVER_AUTH_RESP, bytes(32)))


def test_client_without_encryption_is_open_at_once_and_reports_it() -> None:
    client = ClientConnection(ClientSecurity(encrypt=False), "tcp")
    client.start()
    assert client.data_to_send() == [] and client.state is ConnectionState.OPEN
    # The HandshakeComplete event arrives with the first received data.
    events = client.receive_data(encode_packet(PacketType.SERVER_STATE, bytes(32)))
    assert events[0] == HandshakeComplete(False, None, None)


def test_client_rekey_needs_an_open_encrypted_session() -> None:
    client = ClientConnection(ClientSecurity(encrypt=False), "tcp")
    client.start()
    with pytest.raises(ValueError):
        client.start_rekey()


def test_connection_untangles_a_packet_inserted_between_header_and_payload() -> None:
    server, client = _established()
    client.send(PacketType.PING)
    client.send(PacketType.STREAM_START, b"\0\0\0\x01")
    a, b = client.data_to_send()
    events = server.receive_data(a[:22] + b + a[22:])
    assert events == [
        PacketReceived(Packet(PacketType.STREAM_START, b"\0\0\0\x01")),
        PacketReceived(Packet(PacketType.PING, b"")),
    ]


def test_packets_held_during_the_handshake_are_bounded_and_never_crash_the_open() -> None:
    server, client, _, _ = _connect(ServerSecurity(), ClientSecurity())
    server.send(PacketType.ASCII_FRAME, bytes(2 * 1024 * 1024))  # fine for plaintext, too big once encrypted
    for i in range(70):
        server.send(PacketType.SERVER_STATE, struct.pack(">II24x", i, 0))
    with pytest.raises(ValueError):
        server.send(PacketType.IMAGE_FRAME, bytes(5 * 1024 * 1024 + 1))
    client.send(PacketType.CLIENT_CAPABILITIES, CAPS)
    server_events, client_events = pump(server, client)
    assert server_events[0] == HandshakeComplete(True, "c41", None)
    states = [e.packet.payload[:4] for e in client_events if isinstance(e, PacketReceived)]
    assert states == [struct.pack(">I", i) for i in range(6, 70)]  # the newest 64 survive, in order
    assert server.held_dropped == 7  # 6 overflowed + the frame that cannot be encrypted


@pytest.mark.parametrize("variant", ["c41", "head"])
def test_client_answers_a_server_initiated_rekey(variant: str) -> None:
    # Our server never starts one, but a C server may; the C clients then break, ours must not.
    server, client = _established(variant)
    peer = server._session  # stands in for a C server's crypto context
    assert peer is not None
    client.receive_data(peer.start_rekey())
    (response,) = client.data_to_send()
    client.send(PacketType.PING)
    assert client.data_to_send() == []  # held until REKEY_COMPLETE
    complete = peer.finish_rekey(decode_packet(response).payload)
    assert client.receive_data(complete) == []
    (ping,) = client.data_to_send()
    assert peer.open(decode_packet(ping).payload) == Packet(PacketType.PING, b"")
    assert client.receive_data(peer.seal(PacketType.PONG)) == [PacketReceived(Packet(PacketType.PONG, b""))]
    assert client.rekeys == 1


def _unsigned_key_auth_exchange(security: ServerSecurity, mode: int = 0x03) -> tuple[ServerConnection, list]:
    """Play a c41 client with --key against a server without identity: its AUTH_RESPONSE carries no signature."""
    from asciichat_server.protocol.crypto import KeyPair
    from asciichat_server.protocol.payloads import AuthChallenge, CryptoCapabilities, KeyExchangeResp

    server = ServerConnection(security, "tcp")
    server.receive_data(encode_packet(PacketType.PROTOCOL_VERSION, ProtocolVersion(supports_encryption=mode).encode()))
    server.receive_data(encode_packet(PacketType.CRYPTO_CAPABILITIES, CryptoCapabilities(preferred_auth=1).encode()))
    _, params, _ = server.data_to_send()
    assert CryptoParameters.decode(decode_packet(params).payload).signature_size == 0
    ephemeral = KeyPair.generate()
    resp = KeyExchangeResp(
        ephemeral.public_key,
        bytes(CLIENT_A.verify_key),
        CLIENT_A.sign(ephemeral.public_key).signature,
        authenticated=True,
    )
    server.receive_data(encode_packet(PacketType.CRYPTO_KEY_EXCHANGE_RESP, resp.encode()))
    (challenge,) = server.data_to_send()
    assert AuthChallenge.decode(decode_packet(challenge).payload).flags == 0x02
    events = server.receive_data(encode_packet(PacketType.CRYPTO_AUTH_RESPONSE, bytes(range(32)) + b"\x00"))
    return server, events


def test_allow_list_accepts_the_unsigned_c41_key_response_when_encrypted() -> None:
    # Seen live: the c41 client sizes its signature by the announced signature_size (0 without identity).
    security = ServerSecurity(client_keys=frozenset({bytes(CLIENT_A.verify_key)}))
    server, events = _unsigned_key_auth_exchange(security)
    assert events == [HandshakeComplete(True, "c41", bytes(CLIENT_A.verify_key))]
    (auth_resp,) = server.data_to_send()
    assert decode_packet(auth_resp).type == PacketType.CRYPTO_SERVER_AUTH_RESP


def test_allow_list_refuses_the_unsigned_key_response_without_encryption() -> None:
    security = ServerSecurity(client_keys=frozenset({bytes(CLIENT_A.verify_key)}))
    _, events = _unsigned_key_auth_exchange(security, mode=0x02)
    assert events == [AuthRejected(AuthFailure.SIGNATURE_INVALID)]


def test_websocket_application_packets_before_the_handshake() -> None:
    """ACIP 6.3: dispatched when no authentication is required; refused in a password room."""
    caps = ClientCapabilities(width=40, height=12).encode()
    open_room = ServerConnection(ServerSecurity(), "ws")
    open_room.start()
    events = open_room.receive_message(encode_packet(PacketType.CLIENT_CAPABILITIES, caps))
    assert [type(e) for e in events] == [PacketReceived]

    locked_room = ServerConnection(ServerSecurity(password_key=bytes(32)), "ws")
    locked_room.start()
    with pytest.raises(ProtocolError, match="before the WebSocket handshake authenticated"):
        locked_room.receive_message(encode_packet(PacketType.CLIENT_CAPABILITIES, caps))
