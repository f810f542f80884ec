"""Every vector of ACIP.md §9 / vectors.json, reproduced byte for byte by the protocol core."""

from __future__ import annotations

import hashlib
import hmac
import json
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import nacl.bindings as nb
import pytest
from nacl.signing import SigningKey

from asciichat_server.protocol import crypto
from asciichat_server.protocol.constants import PacketType, StreamType
from asciichat_server.protocol.crc import crc32c
from asciichat_server.protocol.packets import PacketDecoder, decode_packet, encode_packet
from asciichat_server.protocol.payloads import (
    AsciiFrame,
    AudioOpusBatch,
    AuthChallenge,
    AuthFailed,
    ClientCapabilities,
    ClientJoin,
    CryptoCapabilities,
    CryptoParameters,
    ErrorMessage,
    ImageFrame,
    KeyExchangeInit,
    KeyExchangeResp,
    PasswordAuthResponse,
    ProtocolVersion,
    RemoteLog,
    ServerAuthResp,
    ServerState,
    StreamFlags,
)
from asciichat_server.protocol.session import ReceiveCipher, SendCipher


def _vectors_path() -> Path:
    local = Path(__file__).resolve().parent / "data" / "vectors.json"
    if local.exists():
        return local
    return Path(__file__).resolve().parents[3] / "shared/spec/vectors.json"


VECTORS = {v["name"]: v for v in json.loads(_vectors_path().read_text())["vectors"]}

SRV_SK = bytes([0x11] * 32)
CLI_SK = bytes([0x22] * 32)
SRV_PK = nb.crypto_scalarmult_base(SRV_SK)
CLI_PK = nb.crypto_scalarmult_base(CLI_SK)
SESSION_ID = bytes(range(0xA0, 0xB0))
CHALLENGE = bytes([0x33] * 32)
CLIENT_NONCE = bytes([0x44] * 32)


def _caps(head: bool) -> ClientCapabilities:
    return ClientCapabilities(
        capabilities=0x0F,
        color_level=3,
        color_count=16777216,
        render_mode=0,
        width=80,
        height=24,
        term_type="xterm-256color",
        colorterm="truecolor",
        detection_reliable=1,
        utf8_support=1,
        palette_type=1,
        desired_fps=60,
        color_filter=0,
        wants_padding=1,
        codec_video=0x07 if head else None,
        codec_audio=0x03 if head else None,
    )


def _keys() -> dict[str, bytes]:
    return crypto.session_key_candidates(SRV_SK, CLI_PK)


def _encrypted_ping(variant: str) -> bytes:
    key = _keys()[variant]
    sender = SendCipher(key, counter_byteorder="little" if variant == "c41" else "big", session_id=SESSION_ID)
    return sender.seal(encode_packet(PacketType.PING))


PV1 = ProtocolVersion(supports_encryption=0x01)
SIG_KEY = SigningKey(bytes([0x55] * 32))

BUILDERS: dict[str, Callable[[bytes], bytes]] = {
    "crc32c_check_123456789": lambda pk: struct.pack(">I", crc32c(b"123456789")),
    # The contrast vector: proves the test data is what we think, and that our CRC is not this one.
    "crc32_ieee_zlib_123456789_NOT_USED": lambda pk: struct.pack(">I", zlib.crc32(b"123456789")),
    "ping_packet_client_id_0": lambda pk: encode_packet(PacketType.PING),
    "pong_packet_client_id_0": lambda pk: encode_packet(PacketType.PONG),
    "clear_console_packet": lambda pk: encode_packet(PacketType.CLEAR_CONSOLE),
    "crypto_handshake_complete_packet": lambda pk: encode_packet(PacketType.CRYPTO_HANDSHAKE_COMPLETE),
    "crypto_no_encryption_packet": lambda pk: encode_packet(PacketType.CRYPTO_NO_ENCRYPTION),
    "protocol_version_payload_mode_encrypt": lambda pk: PV1.encode(),
    "protocol_version_packet_mode_encrypt": lambda pk: encode_packet(PacketType.PROTOCOL_VERSION, PV1.encode()),
    "protocol_version_packet_mode_full": lambda pk: encode_packet(
        PacketType.PROTOCOL_VERSION, ProtocolVersion(supports_encryption=0x03).encode()
    ),
    "crypto_capabilities_payload_default_client": lambda pk: CryptoCapabilities().encode(),
    "crypto_capabilities_packet_default_client": lambda pk: encode_packet(
        PacketType.CRYPTO_CAPABILITIES, CryptoCapabilities().encode()
    ),
    "crypto_parameters_payload_no_identity": lambda pk: CryptoParameters.for_server(
        identity=False, encrypt=True, verification=False
    ).encode(),
    "crypto_parameters_packet_no_identity": lambda pk: encode_packet(
        PacketType.CRYPTO_PARAMETERS, CryptoParameters().encode()
    ),
    "crypto_parameters_payload_with_identity": lambda pk: CryptoParameters.for_server(
        identity=True, encrypt=True, verification=False
    ).encode(),
    "stream_start_packet_video_audio": lambda pk: encode_packet(
        PacketType.STREAM_START, StreamFlags(StreamType.VIDEO | StreamType.AUDIO).encode()
    ),
    "server_state_packet_1_connected_1_active": lambda pk: encode_packet(
        PacketType.SERVER_STATE, ServerState(1, 1).encode()
    ),
    "error_message_packet_protocol": lambda pk: encode_packet(
        PacketType.ERROR_MESSAGE, ErrorMessage(44, "Protocol violation: test").encode()
    ),
    "remote_log_packet_server_to_client": lambda pk: encode_packet(
        PacketType.REMOTE_LOG, RemoteLog(level=2, direction=1, message="Joined as 'alice'").encode()
    ),
    "crypto_auth_failed_packet_password_incorrect": lambda pk: encode_packet(
        PacketType.CRYPTO_AUTH_FAILED, AuthFailed(0x02).encode()
    ),
    "ascii_frame_packet_small": lambda pk: encode_packet(
        PacketType.ASCII_FRAME, AsciiFrame(2, 2, b"ab\ncd\x1b[0m").encode()
    ),
    "image_frame_packet_2x1_rgb24": lambda pk: encode_packet(
        PacketType.IMAGE_FRAME, ImageFrame(2, 1, pixel_format=1, pixels=bytes([255, 0, 0, 0, 255, 0])).encode()
    ),
    "audio_opus_batch_packet_framing": lambda pk: encode_packet(
        PacketType.AUDIO_OPUS_BATCH, AudioOpusBatch(48000, 20, [b"\x01\x02\x03", b"\x04\x05"]).encode()
    ),
    "client_join_packet": lambda pk: encode_packet(PacketType.CLIENT_JOIN, ClientJoin(0, "alice-1234", 0x07).encode()),
    "client_capabilities_payload_c41_160": lambda pk: _caps(False).encode(),
    "client_capabilities_packet_c41_160": lambda pk: encode_packet(
        PacketType.CLIENT_CAPABILITIES, _caps(False).encode()
    ),
    "client_capabilities_payload_head_168": lambda pk: _caps(True).encode(),
    "x25519_server_ephemeral_secret": lambda pk: SRV_SK,
    "x25519_server_ephemeral_public": lambda pk: crypto.KeyPair.from_secret(SRV_SK).public_key,
    "key_exchange_init_packet_simple": lambda pk: encode_packet(
        PacketType.CRYPTO_KEY_EXCHANGE_INIT, KeyExchangeInit(SRV_PK).encode()
    ),
    "x25519_client_ephemeral_secret": lambda pk: CLI_SK,
    "x25519_client_ephemeral_public": lambda pk: crypto.KeyPair.from_secret(CLI_SK).public_key,
    "key_exchange_resp_packet_simple": lambda pk: encode_packet(
        PacketType.CRYPTO_KEY_EXCHANGE_RESP, KeyExchangeResp(CLI_PK).encode()
    ),
    "shared_key_c41aa5ae2_box_beforenm": lambda pk: _keys()["c41"],
    "shared_key_head_raw_x25519": lambda pk: _keys()["head"],
    "encrypted_ping_payload_c41": lambda pk: _encrypted_ping("c41")[22:],
    "encrypted_ping_packet_c41": lambda pk: _encrypted_ping("c41"),
    "encrypted_ping_payload_head": lambda pk: _encrypted_ping("head")[22:],
    "encrypted_ping_packet_head": lambda pk: _encrypted_ping("head"),
    "password_key_argon2id": lambda pk: pk,
    "auth_challenge_packet_password_required": lambda pk: encode_packet(
        PacketType.CRYPTO_AUTH_CHALLENGE, AuthChallenge(0x01, CHALLENGE).encode()
    ),
    "auth_response_payload_password_c41": lambda pk: PasswordAuthResponse(
        crypto.client_auth_hmac(pk, CHALLENGE, _keys()["c41"]), CLIENT_NONCE
    ).encode(),
    "auth_response_payload_password_head": lambda pk: PasswordAuthResponse(
        crypto.client_auth_hmac(pk, CHALLENGE, _keys()["head"]), CLIENT_NONCE
    ).encode(),
    "server_auth_resp_payload_password_c41": lambda pk: ServerAuthResp(
        crypto.server_auth_hmac(pk, CLIENT_NONCE, _keys()["c41"])
    ).encode(),
    "server_auth_resp_payload_no_password_c41": lambda pk: ServerAuthResp(
        crypto.server_auth_hmac(None, CLIENT_NONCE, _keys()["c41"])
    ).encode(),
    "ed25519_identity_public": lambda pk: bytes(SIG_KEY.verify_key),
    "key_exchange_init_payload_authenticated": lambda pk: crypto.signed_key_exchange_init(SRV_PK, SIG_KEY).encode(),
}


def test_every_vector_has_a_builder() -> None:
    assert len(VECTORS) == 47
    assert set(BUILDERS) == set(VECTORS)


@pytest.mark.parametrize("name", sorted(VECTORS))
def test_vector_bytes(name: str, password_key: bytes) -> None:
    assert BUILDERS[name](password_key).hex() == VECTORS[name]["hex"]


PACKET_VECTORS = sorted(n for n in VECTORS if n.endswith("_packet") or "_packet_" in n)


@pytest.mark.parametrize("name", PACKET_VECTORS)
def test_packet_vectors_decode_whole_and_byte_by_byte(name: str) -> None:
    wire = bytes.fromhex(VECTORS[name]["hex"])
    whole = decode_packet(wire)
    decoder = PacketDecoder()
    got = []
    for i in range(len(wire)):
        got += decoder.feed(wire[i : i + 1])
    assert got == [whole]
    assert decoder.buffered == 0
    assert encode_packet(whole.type, whole.payload, whole.client_id) == wire


def test_crc_is_castagnoli_not_ieee() -> None:
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(b"123456789") != zlib.crc32(b"123456789")


def test_encrypted_vectors_decrypt_under_their_variant_only() -> None:
    keys = _keys()
    for variant, other in (("c41", "head"), ("head", "c41")):
        outer = decode_packet(bytes.fromhex(VECTORS[f"encrypted_ping_packet_{variant}"]["hex"]))
        assert ReceiveCipher(keys[variant]).open(outer.payload).type == PacketType.PING
        with pytest.raises(crypto.DecryptionFailed):
            ReceiveCipher(keys[other]).open(outer.payload)


def test_auth_vectors_verify(password_key: bytes) -> None:
    keys = _keys()
    resp = PasswordAuthResponse.decode(bytes.fromhex(VECTORS["auth_response_payload_password_head"]["hex"]))
    assert crypto.match_password_variant(password_key, CHALLENGE, resp.hmac, keys) == "head"
    resp = PasswordAuthResponse.decode(bytes.fromhex(VECTORS["auth_response_payload_password_c41"]["hex"]))
    assert crypto.match_password_variant(password_key, CHALLENGE, resp.hmac, keys) == "c41"
    assert crypto.match_password_variant(bytes(32), CHALLENGE, resp.hmac, keys) is None
    expected = hmac.new(password_key, CLIENT_NONCE + keys["c41"], hashlib.sha256).digest()
    assert crypto.server_auth_hmac(password_key, CLIENT_NONCE, keys["c41"]) == expected
    kei = KeyExchangeInit.decode(bytes.fromhex(VECTORS["key_exchange_init_payload_authenticated"]["hex"]))
    assert crypto.verify_signature(kei.identity_key, kei.public_key, kei.signature)
    assert not crypto.verify_signature(kei.identity_key, CLI_PK, kei.signature)


def test_payload_vectors_decode_to_their_fields() -> None:
    caps = ClientCapabilities.decode(bytes.fromhex(VECTORS["client_capabilities_payload_c41_160"]["hex"]))
    assert caps == _caps(False)
    assert caps.palette_chars == "   ...',;:clodxkO0KXNWM"
    head = ClientCapabilities.decode(bytes.fromhex(VECTORS["client_capabilities_payload_head_168"]["hex"]))
    assert (head.codec_video, head.codec_audio) == (0x07, 0x03)
    frame_pkt = decode_packet(bytes.fromhex(VECTORS["ascii_frame_packet_small"]["hex"]))
    assert AsciiFrame.decode(frame_pkt.payload) == AsciiFrame(2, 2, b"ab\ncd\x1b[0m")
    opus = AudioOpusBatch.decode(
        decode_packet(bytes.fromhex(VECTORS["audio_opus_batch_packet_framing"]["hex"])).payload
    )
    assert opus.frames == [b"\x01\x02\x03", b"\x04\x05"]
    params = CryptoParameters.decode(bytes.fromhex(VECTORS["crypto_parameters_payload_with_identity"]["hex"]))
    assert (params.selected_auth, params.auth_public_key_size, params.signature_size) == (1, 32, 64)
    err = ErrorMessage.decode(decode_packet(bytes.fromhex(VECTORS["error_message_packet_protocol"]["hex"])).payload)
    assert err == ErrorMessage(44, "Protocol violation: test")
