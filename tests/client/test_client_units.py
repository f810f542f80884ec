"""Unit tests for the client's pure parts: address parsing, server-key parsing, images, capabilities, display."""

from __future__ import annotations

import base64
import io
import struct

import av
import nacl.signing
import numpy as np
import pytest

from asciichat_server.client.address import DEFAULT_TCP_PORT, DEFAULT_WS_PORT, parse_target
from asciichat_server.client.display import CLEAR_SCREEN, CURSOR_HOME, FrameDisplay
from asciichat_server.client.keys import parse_server_key
from asciichat_server.client.media import TestPattern, fit_size, load_image, resize_nearest
from asciichat_server.client.options import ClientOptions


@pytest.mark.parametrize(
    ("text", "kind", "host", "port", "url"),
    [
        ("127.0.0.1:9000", "tcp", "127.0.0.1", 9000, ""),
        ("localhost", "tcp", "localhost", DEFAULT_TCP_PORT, ""),
        ("[::1]:27224", "tcp", "::1", 27224, ""),
        ("[::1]", "tcp", "::1", DEFAULT_TCP_PORT, ""),
        ("::1", "tcp", "::1", DEFAULT_TCP_PORT, ""),
        ("ws://127.0.0.1:8080", "ws", "127.0.0.1", 8080, "ws://127.0.0.1:8080/"),
        (
            "ws://example.test/room?x=1",
            "ws",
            "example.test",
            DEFAULT_WS_PORT,
            f"ws://example.test:{DEFAULT_WS_PORT}/room?x=1",
        ),
        ("ws://[::1]:9/p", "ws", "::1", 9, "ws://[::1]:9/p"),
    ],
)
def test_parse_target(text: str, kind: str, host: str, port: int, url: str) -> None:
    target = parse_target(text)
    assert (target.kind, target.host, target.port, target.url) == (kind, host, port, url)


@pytest.mark.parametrize("text", ["", "host:0", "host:70000", "host:abc", "[::1", "[::1]x", "http://h:1", "ws://:5"])
def test_parse_target_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_target(text)


def test_parse_target_default_port_override() -> None:
    assert parse_target("example.test", 1234).port == 1234
    assert parse_target("example.test:99", 1234).port == 99


def _ssh_line(public: bytes) -> str:
    name = b"ssh-ed25519"
    blob = struct.pack(">I", len(name)) + name + struct.pack(">I", len(public)) + public
    return "ssh-ed25519 " + base64.b64encode(blob).decode() + " me@host"


def test_parse_server_key_forms(tmp_path) -> None:
    public = bytes(nacl.signing.SigningKey.generate().verify_key)
    assert parse_server_key(_ssh_line(public)) == public
    assert parse_server_key(public.hex()) == public
    key_file = tmp_path / "server.pub"
    key_file.write_text("# comment\n" + _ssh_line(public) + "\n")
    assert parse_server_key(str(key_file)) == public
    with pytest.raises(ValueError):
        parse_server_key("ssh-rsa AAAAB3NzaC1yc2E= x")
    with pytest.raises(ValueError):
        parse_server_key("abcd")
    with pytest.raises(ValueError):
        parse_server_key("ssh-ed25519 !!!notbase64")


def test_fit_and_resize() -> None:
    assert fit_size(1920, 1080) == (480, 270)
    assert fit_size(640, 480) == (360, 270)
    assert fit_size(100, 50) == (100, 50)  # never upscaled
    img = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    small = resize_nearest(img, 3, 2)
    assert small.shape == (2, 3, 3)
    assert (small[0, 0] == img[0, 0]).all() and (small[1, 2] == img[2, 4]).all()


def test_test_pattern_moves_and_spans_luminance() -> None:
    pattern = TestPattern(64, 32)
    first, second = pattern.next_frame(), pattern.next_frame()
    assert first.shape == (32, 64, 3) and first.dtype == np.uint8
    assert not np.array_equal(first, second)
    rgb = first.astype(np.int64)
    luma = (77 * rgb[..., 0] + 150 * rgb[..., 1] + 29 * rgb[..., 2] + 128) >> 8
    assert luma.min() < 16 and luma.max() > 240


def test_load_ppm_and_png(tmp_path) -> None:
    raster = np.random.default_rng(1).integers(0, 256, (10, 20, 3), dtype=np.uint8)
    ppm = tmp_path / "a.ppm"
    ppm.write_bytes(b"P6\n# made by the test\n20 10\n255\n" + raster.tobytes())
    assert np.array_equal(load_image(ppm), raster)

    png = tmp_path / "a.png"
    with av.open(str(png), "w", format="image2") as out:
        stream = out.add_stream("png", rate=1)
        stream.width, stream.height, stream.pix_fmt = 20, 10, "rgb24"
        for packet in stream.encode(av.VideoFrame.from_ndarray(raster, format="rgb24")):
            out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    assert np.array_equal(load_image(png), raster)  # PNG is lossless

    big = tmp_path / "big.ppm"
    big.write_bytes(b"P6 960 540 255\n" + bytes(960 * 540 * 3))
    assert load_image(big).shape == (270, 480, 3)


@pytest.mark.parametrize(
    "content",
    [b"P6\n20 10\n255\n" + bytes(5), b"P6\n20 10\n65535\n" + bytes(1200), b"P6\n20", b"not an image at all"],
)
def test_load_image_rejects(tmp_path, content: bytes) -> None:
    bad = tmp_path / "bad.img"
    bad.write_bytes(content)
    with pytest.raises(ValueError):
        load_image(bad)
    with pytest.raises(ValueError, match="cannot read"):
        load_image(tmp_path / "missing.ppm")


def test_capabilities_fields_round_trip() -> None:
    from asciichat_server.protocol.payloads import ClientCapabilities

    opts = ClientOptions(
        target=parse_target("h:1"),
        width=80,
        height=24,
        color_level=3,
        palette_type=6,
        palette_chars=" .:█",
        fps=30,
        wants_padding=False,
        term_type="xterm-256color",
    )
    caps = ClientCapabilities(**opts.capabilities_fields())
    raw = caps.encode()
    assert len(raw) == 160
    back = ClientCapabilities.decode(raw)
    assert (back.width, back.height, back.color_level, back.color_count) == (80, 24, 3, 16777216)
    assert back.capabilities == 0x01 | 0x02 | 0x04 | 0x08
    assert back.palette_chars == " .:█" and back.desired_fps == 30 and back.wants_padding == 0
    assert back.term_type == "xterm-256color"
    opts.head_caps = True
    assert len(ClientCapabilities(**opts.capabilities_fields()).encode()) == 168


def test_display_tty_and_piped() -> None:
    piped = io.StringIO()
    display = FrameDisplay(piped, tty=False)
    display.show("ab\ncd")
    display.show("ef\ngh")
    assert piped.getvalue() == "ab\ncd\nef\ngh\n"

    tty = io.StringIO()
    display = FrameDisplay(tty, tty=True)
    display.show("x")
    display.show("y")
    display.server_state(2)
    display.show("z")  # first state seen: no clear yet
    display.server_state(3)
    display.show("w")  # active count changed: clear before this frame
    display.request_clear()
    display.show("v")
    out = tty.getvalue()
    assert out.count(CLEAR_SCREEN) == 3
    assert out.count(CURSOR_HOME) == 5
    assert out.index(CLEAR_SCREEN) < out.index("x")


def test_display_drops_frames_faster_than_fps_on_a_terminal_only() -> None:
    tty = io.StringIO()
    display = FrameDisplay(tty, tty=True, max_fps=10)
    shown = [display.offer(f"f{i}", now=i * 0.02) for i in range(20)]  # 50 frames/s offered for 0.4 s
    assert [i for i, ok in enumerate(shown) if ok] == [0, 5, 10, 15]  # at 0.0, 0.1, 0.2, 0.3 s: 10/s
    assert display.frames_dropped == 16
    display.request_clear()
    assert display.offer("after clear", now=0.39)  # a pending clear is always drawn at once
    piped = io.StringIO()
    display = FrameDisplay(piped, tty=False, max_fps=10)
    assert all(display.offer(f"f{i}", now=i * 0.02) for i in range(20))  # piped: every frame
    assert piped.getvalue().count("\n") == 20
