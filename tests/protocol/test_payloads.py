"""Every payload class: hypothesis round-trips, and each malformed layout refused with ProtocolError."""

from __future__ import annotations

import struct

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from asciichat_server.protocol import payloads as P
from asciichat_server.protocol.constants import PALETTES, StreamType
from asciichat_server.protocol.crc import crc32c
from asciichat_server.protocol.errors import ProtocolError

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
key32 = st.binary(min_size=32, max_size=32)
nonzero32 = key32.filter(lambda b: b != bytes(32))
sig64 = st.binary(min_size=64, max_size=64).filter(lambda b: b != bytes(64))
gpg = st.text(alphabet="0123456789ABCDEF", max_size=40)
# C strings: no NUL, short enough to keep the terminator.
cstr = st.text(alphabet=st.characters(min_codepoint=1, max_codepoint=0x7F), max_size=31)
dim = st.integers(1, 64)


@st.composite
def image_frames(draw: st.DrawFn) -> P.ImageFrame:
    w, h = draw(dim), draw(dim)
    bpp = draw(st.sampled_from([3, 4]))
    return P.ImageFrame(
        w, h, draw(u32), draw(u32), draw(u32), draw(u32), draw(st.binary(min_size=w * h * bpp, max_size=w * h * bpp))
    )


@st.composite
def audio_batches(draw: st.DrawFn) -> P.AudioBatch:
    return P.AudioBatch(
        draw(st.sampled_from(sorted(P.AudioBatch.STANDARD_RATES))),
        draw(st.integers(1, 8)),
        tuple(draw(st.lists(st.integers(-(2**31), 2**31 - 1), max_size=50))),
        draw(u32),
    )


STRATEGIES: dict[type, st.SearchStrategy] = {
    P.ProtocolVersion: st.builds(P.ProtocolVersion, u16, u16, u8, u8, u8, u16),
    P.CryptoCapabilities: st.builds(P.CryptoCapabilities, u16, u16, u16, u8, u8, u8, u8),
    P.CryptoParameters: st.builds(P.CryptoParameters, u8, u8, u8, u8, u16, u16, u16, u16, u8, u8, u8),
    P.KeyExchangeInit: st.one_of(
        st.builds(P.KeyExchangeInit, key32),
        st.builds(P.KeyExchangeInit, key32, key32, st.binary(min_size=64, max_size=64)),
    ),
    P.KeyExchangeResp: st.one_of(
        st.builds(P.KeyExchangeResp, key32),
        st.builds(
            P.KeyExchangeResp,
            key32,
            st.none() | nonzero32,
            st.none() | sig64,
            gpg,
            authenticated=st.just(True),
        ),
    ),
    P.AuthChallenge: st.builds(P.AuthChallenge, u8, key32),
    P.PasswordAuthResponse: st.builds(P.PasswordAuthResponse, key32, key32),
    P.KeyAuthResponse: st.builds(P.KeyAuthResponse, st.none() | st.binary(min_size=64, max_size=64), key32, gpg),
    P.AuthFailed: st.builds(P.AuthFailed, u8),
    P.ServerAuthResp: st.builds(P.ServerAuthResp, key32),
    P.ClientHello: st.builds(P.ClientHello, key32),
    P.RekeyKey: st.builds(P.RekeyKey, key32),
    P.ClientCapabilities: st.builds(
        P.ClientCapabilities,
        capabilities=u32,
        color_level=st.integers(0, 3),
        color_count=u32,
        render_mode=st.integers(0, 2),
        width=st.integers(1, 4096),
        height=st.integers(1, 4096),
        term_type=cstr,
        colorterm=cstr,
        detection_reliable=u8,
        utf8_support=u32,
        palette_type=st.integers(0, 6),
        palette_custom=st.text(alphabet="░▒▓█ .:-=+*#%@", max_size=20),
        desired_fps=u8,
        color_filter=u8,
        wants_padding=u8,
        codec_video=st.none() | u32,
    ).map(lambda c: P.ClientCapabilities(**{**c.__dict__, "codec_audio": None if c.codec_video is None else 3})),
    P.ImageFrame: image_frames(),
    P.ImageFrameH265: st.builds(P.ImageFrameH265, u8, st.integers(1, 8192), st.integers(1, 8192), st.binary()),
    P.AsciiFrame: st.builds(
        P.AsciiFrame,
        st.integers(1, 16384),
        st.integers(1, 16384),
        st.binary(max_size=500),
        u32.map(lambda f: f & ~0x02),
    ),
    P.AudioOpusBatch: st.builds(P.AudioOpusBatch, u32, u32, st.lists(st.binary(max_size=300), max_size=20)),
    P.AudioBatch: audio_batches(),
    P.ServerState: st.builds(P.ServerState, u32, u32),
    P.ErrorMessage: st.builds(P.ErrorMessage, u32, st.text(max_size=120)),
    P.RemoteLog: st.builds(P.RemoteLog, st.integers(0, 5), st.integers(0, 2), st.text(max_size=120), u16),
    P.ClientJoin: st.builds(P.ClientJoin, u32, cstr.filter(bool), st.integers(0, 15)),
    P.ClientLeave: st.builds(P.ClientLeave, st.text(max_size=60)),
    P.StreamFlags: st.sampled_from([StreamType.VIDEO, StreamType.AUDIO, StreamType.VIDEO | StreamType.AUDIO]).map(
        P.StreamFlags
    ),
    P.TextMessage: st.builds(P.TextMessage, st.text(max_size=250)),
    P.SizeMessage: st.builds(P.SizeMessage, u32, u32),
}


def test_every_payload_class_has_a_strategy() -> None:
    classes = {getattr(P, name) for name in P.__all__}
    assert classes == set(STRATEGIES)


@pytest.mark.parametrize("cls", list(STRATEGIES), ids=lambda c: c.__name__)
def test_roundtrip(cls: type) -> None:
    @settings(max_examples=60, deadline=None)
    @given(STRATEGIES[cls])
    def check(value: object) -> None:
        wire = value.encode()  # type: ignore[attr-defined]
        assert cls.decode(wire) == value  # type: ignore[attr-defined]
        assert cls.decode(wire).encode() == wire  # type: ignore[attr-defined]

    check()


@pytest.mark.parametrize("cls", list(STRATEGIES), ids=lambda c: c.__name__)
def test_random_bytes_decode_or_raise_protocol_error(cls: type) -> None:
    @settings(max_examples=80, deadline=None)
    @given(st.binary(max_size=300))
    def check(data: bytes) -> None:
        try:
            cls.decode(data)  # type: ignore[attr-defined]
        except ProtocolError as exc:
            assert exc.error_code == 44 and exc.reason

    check()


@pytest.mark.parametrize("cls", list(STRATEGIES), ids=lambda c: c.__name__)
def test_truncated_payloads_are_refused(cls: type) -> None:
    """Dropping the last byte of any non-empty encoding must not decode silently into something else."""

    @settings(max_examples=30, deadline=None)
    @given(STRATEGIES[cls])
    def check(value: object) -> None:
        wire = value.encode()  # type: ignore[attr-defined]
        if not wire:
            return
        try:
            decoded = cls.decode(wire[:-1])  # type: ignore[attr-defined]
        except ProtocolError:
            return
        if cls is P.KeyAuthResponse and not value.gpg_key_id:  # type: ignore[attr-defined]
            return  # the 96-byte form without the gpg length byte is tolerated on purpose
        assert decoded != value
        # Only variable-length payloads may legitimately shrink (RGBA minus one byte can be RGB for 1 pixel).
        assert cls in {P.ImageFrameH265, P.TextMessage, P.ClientLeave, P.AudioOpusBatch, P.ImageFrame}

    check()


# ------------------------------------------------------------------------------- specific layouts


def test_client_capabilities_sizes_and_ranges() -> None:
    base = P.ClientCapabilities(width=80, height=24)
    assert len(base.encode()) == 160
    assert len(P.ClientCapabilities(codec_video=7, codec_audio=3).encode()) == 168
    for bad_size in (0, 159, 161, 167, 169):
        with pytest.raises(ProtocolError, match="160 or 168"):
            P.ClientCapabilities.decode(bytes(bad_size))
    raw = bytearray(base.encode())
    for offset, fmt, value, needle in (
        (4, ">I", 4, "color_level"),
        (12, ">I", 3, "render_mode"),
        (16, ">H", 0, "size"),
        (18, ">H", 4097, "size"),
        (89, ">I", 7, "palette_type"),
    ):
        bad = bytearray(raw)
        struct.pack_into(fmt, bad, offset, value)
        with pytest.raises(ProtocolError, match=needle):
            P.ClientCapabilities.decode(bytes(bad))


def test_client_capabilities_ignore_garbage_after_nul() -> None:
    # The c41 native client leaves uninitialised bytes after $TERM's NUL (see capture-c41.txt).
    raw = bytearray(P.ClientCapabilities(term_type="xterm").encode())
    raw[26:52] = bytes(range(0x80, 0x80 + 26))
    assert P.ClientCapabilities.decode(bytes(raw)).term_type == "xterm"


@pytest.mark.parametrize("ptype", [0, 1, 2, 3, 4, 5, 6])
def test_palette_chars(ptype: int) -> None:
    caps = P.ClientCapabilities(palette_type=ptype, palette_custom="@%#*+=-:. ")
    expected = {0: PALETTES[1], 6: "@%#*+=-:. "}.get(ptype) or PALETTES[ptype]
    assert caps.palette_chars == expected
    assert P.ClientCapabilities(palette_type=6).palette_chars == PALETTES[1]


def test_ascii_frame_zstd_decoding() -> None:
    text = ("\x1b[38;2;1;2;3m" + "#" * 70 + "\n") * 24
    frame = P.AsciiFrame(80, 24, text.encode())
    wire = frame.encode_compressed()
    assert len(wire) < len(frame.encode())
    assert P.AsciiFrame.decode(wire) == frame
    header = bytearray(wire[:24])
    with pytest.raises(ProtocolError, match="checksum"):
        struct.pack_into(">I", header, 16, 0)
        P.AsciiFrame.decode(bytes(header) + wire[24:])
    with pytest.raises(ProtocolError, match=r"corrupt|inflates"):
        P.AsciiFrame.decode(wire[:24] + wire[24:-4] + b"\0\0\0\0")
    # A forged zstd content size must be refused before anything is allocated.
    big = zstandard.ZstdCompressor().compress(b"a" * 70000)  # declares 70000 in its frame header
    forged_header = struct.pack(">IIIIII", 80, 24, 100, len(big), crc32c(b"a" * 100), 0x02)
    with pytest.raises(ProtocolError, match="declares"):
        P.AsciiFrame.decode(forged_header + big)
    bomb = zstandard.ZstdCompressor(write_content_size=False).compress(b"a" * 100000)
    bomb_header = struct.pack(">IIIIII", 80, 24, 100, len(bomb), crc32c(b"a" * 100), 0x02)
    with pytest.raises(ProtocolError):
        P.AsciiFrame.decode(bomb_header + bomb)  # inflating past original_size is refused, not allocated


def test_ascii_frame_malformed() -> None:
    good = P.AsciiFrame(2, 2, b"ab\ncd").encode()
    with pytest.raises(ProtocolError, match="original_size"):
        P.AsciiFrame.decode(good + b"x")
    with pytest.raises(ProtocolError, match="checksum"):
        P.AsciiFrame.decode(good[:-1] + b"x")
    with pytest.raises(ProtocolError, match="out of range"):
        P.AsciiFrame.decode(struct.pack(">I", 0) + good[4:])


def test_image_frame_length_must_match_dimensions() -> None:
    with pytest.raises(ProtocolError, match="pixel bytes"):
        P.ImageFrame.decode(P.ImageFrame(2, 2, pixels=bytes(11)).encode())
    with pytest.raises(ProtocolError, match="out of range"):
        P.ImageFrame.decode(P.ImageFrame(8193, 1, pixels=b"").encode())
    assert P.ImageFrame.decode(P.ImageFrame(2, 2, pixels=bytes(16)).encode()).bytes_per_pixel == 4


def test_opus_batch_malformed() -> None:
    good = P.AudioOpusBatch(48000, 20, [b"abc", b"de"]).encode()
    for bad, needle in (
        (good[:-1], "add up"),
        (good + b"x", "add up"),
        (struct.pack(">IIII", 48000, 20, 1001, 0), "exceeds"),
        (struct.pack(">IIII", 48000, 20, 5, 0) + b"\0\x01", "too short"),
    ):
        with pytest.raises(ProtocolError, match=needle):
            P.AudioOpusBatch.decode(bad)


def test_error_and_log_texts_are_capped_at_512_bytes() -> None:
    long = "é" * 600
    err = P.ErrorMessage.decode(P.ErrorMessage(44, long).encode())
    assert len(err.message.encode()) <= 512 and long.startswith(err.message)
    log = P.RemoteLog.decode(P.RemoteLog(2, 1, long).encode())
    assert log.flags & P.RemoteLog.FLAG_TRUNCATED
    with pytest.raises(ProtocolError):
        P.ErrorMessage.decode(struct.pack(">II", 44, 513) + bytes(513))
    with pytest.raises(ProtocolError, match="direction"):
        P.RemoteLog.decode(struct.pack(">BBHI", 2, 3, 0, 0))


def test_stream_flags_refuse_zero_and_unknown_bits() -> None:
    for value in (0, 4, 0x80000001):
        with pytest.raises(ProtocolError, match="stream type"):
            P.StreamFlags.decode(struct.pack(">I", value))


def test_key_exchange_resp_long_form_with_zero_identity() -> None:
    resp = P.KeyExchangeResp(bytes(range(32)), authenticated=True)
    wire = resp.encode()
    assert len(wire) == 129 and P.KeyExchangeResp.decode(wire) == resp
    with pytest.raises(ProtocolError, match="gpg"):
        P.KeyExchangeResp.decode(wire[:-1] + b"\x05")
    for size in (0, 31, 33, 128, 170):
        with pytest.raises(ProtocolError):
            P.KeyExchangeResp.decode(bytes(size))


def test_size_message_text_form() -> None:
    assert P.SizeMessage.decode(b"SIZE:80,24") == P.SizeMessage(80, 24)
    for bad in (b"SIZE:80", b"SIZE:-1,2", b"SIZE:a,b"):
        with pytest.raises(ProtocolError):
            P.SizeMessage.decode(bad)


def test_client_join_refuses_empty_name() -> None:
    with pytest.raises(ProtocolError, match="empty"):
        P.ClientJoin.decode(bytes(40))
