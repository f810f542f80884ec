"""Hypothesis stateful test: a real client's traffic mixed with random packets, garbage and random chunking
fed to a ServerConnection. The only exception allowed out of the server is ProtocolError, and after it the
connection is ERROR for good; everything it queues is always a well-formed packet."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from nacl.signing import SigningKey

from asciichat_server.protocol.connection import (
    ClientConnection,
    ClientSecurity,
    ConnectionState,
    ServerConnection,
    ServerSecurity,
)
from asciichat_server.protocol.constants import HANDSHAKE_TYPES, PacketType
from asciichat_server.protocol.errors import ProtocolError
from asciichat_server.protocol.packets import decode_packet, encode_packet
from asciichat_server.protocol.payloads import (
    ClientCapabilities,
    CryptoCapabilities,
    ProtocolVersion,
    StreamFlags,
)

# The state machine needs no real Argon2id output: any 32 bytes both sides share will do.
PASSWORD_KEY = bytes(range(32))
CLIENT_ID = SigningKey(bytes([0x66] * 32))
SERVER_ID = SigningKey(bytes([0x55] * 32))

CONFIGS = {
    "plain": (ServerSecurity(), ClientSecurity(encrypt=False)),
    "c41": (ServerSecurity(), ClientSecurity()),
    "head": (ServerSecurity(identity=SERVER_ID), ClientSecurity(key_variant="head")),
    "password": (ServerSecurity(password_key=PASSWORD_KEY), ClientSecurity(password_key=PASSWORD_KEY)),
    "allow-list": (
        ServerSecurity(client_keys=frozenset({bytes(CLIENT_ID.verify_key)})),
        ClientSecurity(identity=CLIENT_ID),
    ),
    "plain-ws": (ServerSecurity(encrypt=False), ClientSecurity(encrypt=False)),
}

VALID_PAYLOADS = [
    b"",
    ProtocolVersion().encode(),
    ProtocolVersion(supports_encryption=3).encode(),
    CryptoCapabilities().encode(),
    ClientCapabilities().encode(),
    StreamFlags(1).encode(),
    bytes(32),
    bytes(range(32)),
    bytes(129),
    bytes(41),
    b"\x00",
    bytes(64),
    bytes(97),
]
packet_types = st.one_of(st.sampled_from(sorted(PacketType)), st.integers(0, 0xFFFF))
payloads = st.one_of(st.binary(max_size=200), st.sampled_from(VALID_PAYLOADS))
app_types = st.sampled_from(
    [PacketType.PING, PacketType.PONG, PacketType.STREAM_START, PacketType.IMAGE_FRAME, PacketType.REMOTE_LOG]
)


class ServerUnderFire(RuleBasedStateMachine):
    @initialize(config=st.sampled_from(sorted(CONFIGS)), tcp=st.booleans(), hostile=st.booleans())
    def setup(self, config: str, tcp: bool, hostile: bool) -> None:
        self.hostile = hostile  # half the runs only chunk and reorder honest traffic, so they get deep
        server_security, client_security = CONFIGS[config]
        transport = "ws" if config == "plain-ws" or (not tcp and config != "plain") else "tcp"
        self.transport = transport
        self.server = ServerConnection(server_security, transport)
        self.client = ClientConnection(client_security, transport)
        self.server.start()
        self.client.start()
        # Like every real client: CLIENT_CAPABILITIES is the first application packet (held until OPEN).
        self.client.send(PacketType.CLIENT_CAPABILITIES, ClientCapabilities().encode())
        self.server_failed = False
        self.client_failed = False
        self.sent_by_server: list[bytes] = []

    # --- feeding the server -----------------------------------------------------------------

    def _feed_server(self, wire: bytes, cuts: list[int]) -> None:
        was_failed = self.server_failed
        try:
            if self.transport == "ws":
                self.server.receive_message(wire)
            else:
                pos = 0
                for cut in [*cuts, len(wire)]:
                    self.server.receive_data(wire[pos : pos + cut])
                    pos += cut
                    if pos >= len(wire):
                        break
        except ProtocolError as exc:
            assert exc.reason and exc.error_code == 44
            assert self.server.state is ConnectionState.ERROR
            if not was_failed:
                self.server_failed = True
                self.server.fail(exc.reason, exc.error_code)
            return
        # Accepted input never brings a failed connection back.
        assert not was_failed

    def _drain_server(self) -> list[bytes]:
        out = self.server.data_to_send()
        self.sent_by_server += out
        return out

    @rule(cuts=st.lists(st.integers(1, 40), max_size=6), rounds=st.integers(1, 4))
    def client_talks(self, cuts: list[int], rounds: int) -> None:
        for _ in range(rounds):
            for wire in self.client.data_to_send():
                self._feed_server(wire, cuts)
            for wire in self._drain_server():
                if self.client_failed or self.client.state in (ConnectionState.CLOSED, ConnectionState.ERROR):
                    break
                try:
                    if self.transport == "ws":
                        self.client.receive_message(wire)
                    else:
                        self.client.receive_data(wire)
                except ProtocolError:
                    self.client_failed = True

    @precondition(lambda self: self.client.state is ConnectionState.OPEN)
    @rule(ptype=app_types, payload=st.binary(max_size=64))
    def client_sends_application_packet(self, ptype: int, payload: bytes) -> None:
        self.client.send(ptype, payload)

    @precondition(lambda self: self.client.state is ConnectionState.OPEN and self.client.encrypted)
    @rule()
    def client_rekeys(self) -> None:
        if self.client._session is not None and not self.client._session.rekey_pending:
            self.client.start_rekey()

    @precondition(lambda self: self.hostile)
    @rule(ptype=packet_types, payload=payloads, cuts=st.lists(st.integers(1, 30), max_size=4))
    def attacker_injects_packet(self, ptype: int, payload: bytes, cuts: list[int]) -> None:
        self._feed_server(encode_packet(ptype, payload), cuts)

    @precondition(lambda self: self.hostile)
    @rule(garbage=st.binary(min_size=1, max_size=64))
    def attacker_injects_garbage(self, garbage: bytes) -> None:
        self._feed_server(garbage, [])

    @precondition(lambda self: self.hostile)
    @rule(flip=st.integers(0, 10_000))
    def attacker_replays_or_corrupts_server_view(self, flip: int) -> None:
        """Replay a packet the client already sent (or a corrupted copy)."""
        wires = self.client.data_to_send()
        if not wires:
            return
        wire = bytearray(wires[0])
        for w in wires:
            self._feed_server(w, [])
        if len(wire) > 22:
            wire[22 + flip % (len(wire) - 22)] ^= 0x01
            ptype = int.from_bytes(wire[8:10], "big")
            self._feed_server(encode_packet(ptype, bytes(wire[22:])), [])  # valid CRC: only crypto can catch it
        else:
            self._feed_server(bytes(wire), [])

    @rule(ptype=app_types, payload=st.binary(max_size=64))
    def server_sends(self, ptype: int, payload: bytes) -> None:
        self.server.send(ptype, payload)

    # --- what must always hold --------------------------------------------------------------

    @invariant()
    def server_output_is_well_formed(self) -> None:
        if not hasattr(self, "server"):
            return
        for wire in self._drain_server_view():
            packet = decode_packet(wire)
            if self.server.state is ConnectionState.HANDSHAKE and self.server._session is None:
                # Before any key exists only handshake packets (or an ERROR_MESSAGE) may leave.
                assert packet.type in HANDSHAKE_TYPES or packet.type in (
                    PacketType.PROTOCOL_VERSION,
                    PacketType.ERROR_MESSAGE,
                )

    def _drain_server_view(self) -> list[bytes]:
        # Peek at the queue without taking it from the client.
        return list(self.server._outbox)

    @invariant()
    def record_coverage(self) -> None:
        if hasattr(self, "server"):
            event(f"server {self.server.state.name}{' rekeyed' if self.server.rekeys else ''}")

    @invariant()
    def failed_means_error_state(self) -> None:
        if hasattr(self, "server") and self.server_failed:
            assert self.server.state is ConnectionState.ERROR

    @invariant()
    def honest_traffic_never_fails(self) -> None:
        if hasattr(self, "server") and not self.hostile:
            assert not self.server_failed and not self.client_failed
            assert self.server.state is not ConnectionState.CLOSED


ServerUnderFire.TestCase.settings = settings(
    max_examples=120,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
test_server_under_fire = ServerUnderFire.TestCase


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_each_configuration_completes_without_interference(config: str) -> None:
    """Sanity for the machine above: with no attacker, every configuration reaches OPEN on both sides."""
    server_security, client_security = CONFIGS[config]
    transport = "ws" if config == "plain-ws" else "tcp"
    server = ServerConnection(server_security, transport)
    client = ClientConnection(client_security, transport)
    server.start()
    client.start()
    client.send(PacketType.CLIENT_CAPABILITIES, ClientCapabilities().encode())
    for _ in range(10):
        for wire in client.data_to_send():
            server.receive_message(wire) if transport == "ws" else server.receive_data(wire)
        for wire in server.data_to_send():
            client.receive_message(wire) if transport == "ws" else client.receive_data(wire)
    assert server.state is ConnectionState.OPEN and client.state is ConnectionState.OPEN
    assert server.encrypted == client.encrypted == (config not in ("plain", "plain-ws"))


# ------------------------------------------------------------------------------- the client against a hostile server


def _scripted_server_streams() -> st.SearchStrategy[list[bytes]]:
    packet = st.builds(encode_packet, packet_types, payloads)
    return st.lists(st.one_of(packet, st.binary(min_size=1, max_size=40)), max_size=12)


@settings(max_examples=150, deadline=None)
@given(
    config=st.sampled_from(sorted(CONFIGS)),
    ws=st.booleans(),
    honest_rounds=st.integers(0, 4),
    hostile=_scripted_server_streams(),
)
def test_client_survives_or_refuses_any_server(config: str, ws: bool, honest_rounds: int, hostile: list[bytes]) -> None:
    """A real handshake for a few rounds, then anything at all from the 'server': only ProtocolError may escape."""
    server_security, client_security = CONFIGS[config]
    transport = "ws" if ws else "tcp"
    server = ServerConnection(server_security, transport)
    client = ClientConnection(client_security, transport)
    server.start()
    client.start()
    client.send(PacketType.CLIENT_CAPABILITIES, ClientCapabilities().encode())

    def to_client(wire: bytes) -> None:
        if ws:
            client.receive_message(wire)
        else:
            client.receive_data(wire)

    try:
        for _ in range(honest_rounds):
            for wire in client.data_to_send():
                server.receive_message(wire) if ws else server.receive_data(wire)
            for wire in server.data_to_send():
                to_client(wire)
        for wire in hostile:
            to_client(wire)
    except ProtocolError as exc:
        assert (exc.reason and client.state is ConnectionState.ERROR) or server.state is ConnectionState.ERROR
        return
    for wire in client.data_to_send():
        decode_packet(wire)  # whatever the client queued is well formed
