"""IMAGE_FRAME_H265 decoding: frames encoded by the test with PyAV's libx265, fed as Annex-B and length-prefixed."""

import fractions

import av
import numpy as np
import pytest

from asciichat_server.media import Compositor, RenderSpec, VideoSource
from asciichat_server.media.h265 import H265DecodeError, H265Decoder, to_annex_b

pytestmark = pytest.mark.skipif("libx265" not in av.codecs_available, reason="FFmpeg in PyAV lacks libx265")

W, H = 64, 48


def picture(i: int) -> np.ndarray:
    img = np.zeros((H, W, 3), np.uint8)
    img[:, :, 0] = 200  # red background
    img[10:30, 8 + 4 * (i % 8) : 28 + 4 * (i % 8)] = (0, 255, 0)  # a green square moving right
    return img


def encode(n: int) -> list[bytes]:
    enc = av.CodecContext.create("libx265", "w")
    enc.width, enc.height, enc.pix_fmt = W, H, "yuv420p"
    enc.time_base = fractions.Fraction(1, 30)
    enc.framerate = 30
    # what the native HEAD client uses: ultrafast, zerolatency
    enc.options = {"preset": "ultrafast", "tune": "zerolatency", "x265-params": "log-level=none:keyint=30"}
    out = []
    for i in range(n):
        frame = av.VideoFrame.from_ndarray(picture(i), format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        out.extend(bytes(p) for p in enc.encode(frame))
    out.extend(bytes(p) for p in enc.encode(None))
    return out


def split_annex_b(data: bytes) -> list[bytes]:
    parts = data.split(b"\x00\x00\x01")
    return [p.rstrip(b"\x00") for p in parts if p.rstrip(b"\x00")]


@pytest.fixture(scope="module")
def stream() -> list[bytes]:
    packets = encode(5)
    assert len(packets) == 5 and packets[0].startswith(b"\x00\x00\x00\x01")
    return packets


def check_picture(rgb: np.ndarray, i: int) -> None:
    assert rgb.shape == (H, W, 3)
    # lossy codec: compare the two regions' mean colour
    assert np.abs(rgb[15:25, 12 + 4 * (i % 8) : 24 + 4 * (i % 8)].mean((0, 1)) - (0, 255, 0)).max() < 20
    assert np.abs(rgb[35:, :].mean((0, 1)) - (200, 0, 0)).max() < 20


def test_annex_b(stream: list[bytes]) -> None:
    dec = H265Decoder()
    for i, packet in enumerate(stream):
        rgb = dec.decode(packet, W, H)
        assert rgb is not None
        check_picture(rgb, i)
    assert dec.frames_decoded == 5


def test_decode_without_pixels_keeps_state(stream: list[bytes]) -> None:
    dec = H265Decoder()
    assert all(dec.decode(p, want_pixels=False) is None for p in stream[:4])
    assert dec.frames_decoded == 4
    check_picture(dec.decode(stream[4]), 4)  # the P-frame after skipped conversions still decodes


def test_length_prefixed(stream: list[bytes]) -> None:
    dec = H265Decoder()
    for i, packet in enumerate(stream):
        nals = split_annex_b(packet)
        prefixed = b"".join(len(n).to_bytes(4, "big") + n for n in nals)
        assert not prefixed.startswith(b"\x00\x00\x00\x01")
        check_picture(dec.decode(prefixed), i)


def test_decoded_frames_render(stream: list[bytes]) -> None:
    dec = H265Decoder()
    rgb = dec.decode(stream[0])
    frame = Compositor().render([VideoSource(1, 1, rgb)], RenderSpec(16, 6, wants_padding=False))
    assert len(frame.split(b"\n")) == 6


def test_oversized_pictures_are_refused(stream: list[bytes]) -> None:
    dec = H265Decoder(max_pixels=W * H - 1)
    with pytest.raises(H265DecodeError, match="larger than 3071 pixels"):
        dec.decode(stream[0])
    assert H265Decoder(max_pixels=W * H).decode(stream[0]) is not None


def test_empty_bitstream_is_not_an_error() -> None:
    assert H265Decoder().decode(b"", 64, 48) is None


def test_bad_input_raises_clear_error() -> None:
    dec = H265Decoder()
    with pytest.raises(H265DecodeError, match="neither Annex-B nor"):
        dec.decode(b"definitely not h265")
    with pytest.raises(H265DecodeError, match=r"H\.265 decode failed"):
        dec.decode(b"\x00\x00\x00\x01\x40\x01" + bytes(range(256)) * 4)
    with pytest.raises(H265DecodeError, match="width 0"):
        dec.decode(b"\x00\x00\x00\x01\x40\x01", 0, 10)
    with pytest.raises(H265DecodeError, match="height 9000"):
        dec.decode(b"\x00\x00\x00\x01\x40\x01", 10, 9000)


def test_to_annex_b_forms() -> None:
    nal1, nal2 = b"\x40\x01\xaa\xbb", b"\x42\x01\xcc"
    expected = b"\x00\x00\x00\x01" + nal1 + b"\x00\x00\x00\x01" + nal2
    assert to_annex_b(expected) == expected
    assert to_annex_b(b"\x00\x00\x00\x04" + nal1 + b"\x00\x00\x00\x03" + nal2) == expected
    three_byte = b"\x00\x00\x01" + nal1
    assert to_annex_b(three_byte) == three_byte
    with pytest.raises(H265DecodeError):
        to_annex_b(b"\x00\x00\x00\x09" + nal1)  # length runs past the end


def test_joining_mid_stream_waits_for_the_next_keyframe() -> None:
    packets = encode(33)  # keyint=30: keyframes at 0 and 30
    dec = H265Decoder()
    results = [dec.decode(p) for p in packets[1:]]
    assert all(r is None for r in results[:29])  # P-frames without parameter sets: no picture, no error
    assert all(r is not None for r in results[29:])
    check_picture(results[29], 30)
