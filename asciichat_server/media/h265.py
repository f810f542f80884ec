"""IMAGE_FRAME_H265 (HEAD clients) → RGB pixels with PyAV's HEVC decoder, one decoder per sending client.

Accepts Annex-B (start codes, what the native HEAD client's x265 emits) and 4-byte length-prefixed NAL units
(what WebCodecs emits without `format: "annexb"`, ACIP.md 12.1). Anything the decoder refuses becomes an
H265DecodeError whose message can go straight into an ERROR_MESSAGE.
"""

from __future__ import annotations

import av
import numpy as np

MAX_DIMENSION = 8192  # the HEAD server's bound for IMAGE_FRAME_H265 width/height (ACIP.md 5.1.3)
# Pictures above 4K are refused inside FFmpeg (AVCodecContext.max_pixels) before it allocates them: a peer
# must not make us hold 8192x8192 frames. Real senders use 480x270 (native) or camera sizes (browsers).
MAX_PIXELS = 3840 * 2160
START_CODE = b"\x00\x00\x00\x01"


class H265DecodeError(Exception):
    """The bitstream could not be decoded; `str(err)` is a one-line reason for the peer."""


def _length_prefixed_nals(data: bytes) -> list[bytes] | None:
    """Split 4-byte big-endian length-prefixed NAL units, or None if `data` is not exactly that."""
    nals = []
    offset = 0
    while offset < len(data):
        if offset + 4 > len(data):
            return None
        length = int.from_bytes(data[offset : offset + 4], "big")
        start = offset + 4
        # An HEVC NAL header is 2 bytes with forbidden_zero_bit clear.
        if length < 2 or start + length > len(data) or data[start] & 0x80:
            return None
        nals.append(data[start : start + length])
        offset = start + length
    return nals or None


def to_annex_b(data: bytes) -> bytes:
    """Normalise an H.265 access unit to Annex-B; raises H265DecodeError for unrecognisable input."""
    if data.startswith(START_CODE):
        return data
    nals = _length_prefixed_nals(data)
    if nals is not None:
        return b"".join(START_CODE + nal for nal in nals)
    if data.startswith(b"\x00\x00\x01"):
        return data
    raise H265DecodeError(
        f"H.265 data is neither Annex-B nor 4-byte length-prefixed NAL units (first bytes {data[:8].hex()})"
    )


class H265Decoder:
    """Stateful decoder for one source; feed every access unit in order."""

    def __init__(self, max_pixels: int = MAX_PIXELS) -> None:
        self.max_pixels = max_pixels
        self._ctx = av.CodecContext.create("hevc", "r")
        self._ctx.options = {"max_pixels": str(max_pixels)}
        # One thread: frame threading would hold pictures back (latency), and the native client's x265 streams
        # have a single slice, so slice threads only add overhead (0.5 ms vs 0.7 ms CPU per 480x270 frame here).
        # Parallelism across senders comes from there being one decoder per sender.
        self._ctx.thread_type = "NONE"
        self._ctx.thread_count = 1
        self.frames_decoded = 0

    def decode(
        self, bitstream: bytes, width: int | None = None, height: int | None = None, want_pixels: bool = True
    ) -> np.ndarray | None:
        """Decode one IMAGE_FRAME_H265 bitstream; the newest picture as H x W x 3 RGB, or None.

        None means the packet was empty or the decoder produced no picture yet (encoder still buffering).
        `width`/`height` are the header's values and are only range-checked: the bitstream is authoritative.
        `want_pixels=False` only advances the decoder (every packet must be decoded for the next ones to
        decode) and skips the RGB conversion, for a sender that is not on anyone's grid right now.
        """
        for name, value in (("width", width), ("height", height)):
            if value is not None and not 1 <= value <= MAX_DIMENSION:
                raise H265DecodeError(f"IMAGE_FRAME_H265 {name} {value} outside 1..{MAX_DIMENSION}")
        if not bitstream:
            return None
        packet = av.Packet(to_annex_b(bitstream))
        try:
            frames = self._ctx.decode(packet)
        except av.error.FFmpegError as err:
            if isinstance(err, MemoryError):  # FFmpeg's answer to a picture above max_pixels
                raise H265DecodeError(f"H.265 picture larger than {self.max_pixels} pixels refused") from None
            raise H265DecodeError(f"H.265 decode failed: {err.strerror or err}") from None
        if not frames:
            return None
        frame = frames[-1]
        if frame.width > MAX_DIMENSION or frame.height > MAX_DIMENSION:
            raise H265DecodeError(f"decoded picture {frame.width}x{frame.height} exceeds {MAX_DIMENSION}")
        self.frames_decoded += len(frames)
        return frame.to_ndarray(format="rgb24") if want_pixels else None

    def close(self) -> None:
        self._ctx = None  # type: ignore[assignment]
