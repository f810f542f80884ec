"""Video sources for the client: a moving test pattern and still images (PPM by hand, others via PyAV)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["MAX_FRAME_HEIGHT", "MAX_FRAME_WIDTH", "TestPattern", "fit_size", "load_image", "resize_nearest"]

# The native client scales its camera image to fit 480x270 before sending (SESSION_MAX_FRAME_WIDTH/HEIGHT);
# we keep frames the same size so the server sees what it would see from the C client.
MAX_FRAME_WIDTH = 480
MAX_FRAME_HEIGHT = 270


def fit_size(width: int, height: int, max_w: int = MAX_FRAME_WIDTH, max_h: int = MAX_FRAME_HEIGHT) -> tuple[int, int]:
    """Largest size within ``max_w`` x ``max_h`` with the aspect of ``width`` x ``height`` (never upscaled)."""
    if width <= max_w and height <= max_h:
        return width, height
    scale = min(max_w / width, max_h / height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def resize_nearest(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    """Nearest-neighbour resize of an H x W x 3 array (cheap, and what the C client's scaler amounts to)."""
    src_h, src_w = pixels.shape[:2]
    if (src_w, src_h) == (width, height):
        return pixels
    rows = (np.arange(height) * src_h // height).clip(0, src_h - 1)
    cols = (np.arange(width) * src_w // width).clip(0, src_w - 1)
    return np.ascontiguousarray(pixels[rows][:, cols])


class TestPattern:
    """A moving pattern: colour bars over a luminance ramp, with a bright band sweeping across.

    Every frame differs (so a server that caches by content still has work) and every luminance
    bucket appears, so each palette character shows up in the rendered ASCII.
    """

    __test__ = False  # not a pytest class

    def __init__(self, width: int = MAX_FRAME_WIDTH, height: int = MAX_FRAME_HEIGHT) -> None:
        if width < 2 or height < 2:
            raise ValueError("test pattern needs at least 2x2 pixels")
        self.width = width
        self.height = height
        x = np.linspace(0.0, 1.0, width, dtype=np.float32)
        y = np.linspace(0.0, 1.0, height, dtype=np.float32)
        ramp = np.broadcast_to(x[None, :], (height, width))
        bars = np.array(
            [[255, 255, 255], [255, 255, 0], [0, 255, 255], [0, 255, 0], [255, 0, 255], [255, 0, 0], [0, 0, 255]],
            dtype=np.float32,
        )
        bar_index = np.minimum((x * len(bars)).astype(np.int64), len(bars) - 1)
        top = bars[bar_index][None, :, :] * ramp[..., None]
        # Lower half: a plain grey ramp (dark to light), so luminance spans the whole palette.
        grey = np.repeat(ramp[..., None], 3, axis=2) * 255.0
        base = np.where((y[:, None, None] < 0.5), top, grey)
        self._base = base.astype(np.uint8)
        self._x = np.arange(width)
        self._y = np.arange(height)
        self.frame_index = 0

    def next_frame(self) -> np.ndarray:
        """Return the next frame (H x W x 3 uint8, RGB)."""
        frame = self._base.copy()
        band = (self._x[None, :] + self._y[:, None] - self.frame_index * 4) % (self.width // 2) < 12
        frame[band] = 255 - frame[band]
        self.frame_index += 1
        return frame


def _read_ppm(data: bytes) -> np.ndarray:
    """Decode binary PPM (P6) or PGM (P5), 8-bit, to H x W x 3."""
    magic = data[:2]
    fields: list[bytes] = []
    pos = 2
    while len(fields) < 3:
        while pos < len(data) and data[pos : pos + 1].isspace():
            pos += 1
        if data[pos : pos + 1] == b"#":
            while pos < len(data) and data[pos : pos + 1] not in (b"\n", b"\r"):
                pos += 1
            continue
        start = pos
        while pos < len(data) and not data[pos : pos + 1].isspace():
            pos += 1
        if start == pos:
            raise ValueError("truncated PPM header")
        fields.append(data[start:pos])
    pos += 1  # exactly one whitespace byte before the raster
    width, height, maxval = (int(f) for f in fields)
    if width <= 0 or height <= 0:
        raise ValueError(f"bad PPM size {width}x{height}")
    if maxval != 255:
        raise ValueError(f"only 8-bit PPM is supported (maxval {maxval})")
    channels = 3 if magic == b"P6" else 1
    need = width * height * channels
    raster = np.frombuffer(data, dtype=np.uint8, count=need, offset=pos) if len(data) - pos >= need else None
    if raster is None:
        raise ValueError("truncated PPM raster")
    image = raster.reshape(height, width, channels)
    return np.repeat(image, 3, axis=2) if channels == 1 else image.copy()


def load_image(path: str | Path) -> np.ndarray:
    """Load an image file as H x W x 3 uint8 RGB, scaled to fit the native client's 480x270 frame size."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read image {str(path)!r}: {exc.strerror or exc}") from exc
    if data[:2] in (b"P6", b"P5"):
        pixels = _read_ppm(data)
    else:
        import av  # imported here: only image files other than PPM need it

        try:
            with av.open(str(path)) as container:
                frame = next(container.decode(video=0))
                pixels = frame.to_ndarray(format="rgb24")
        except (av.error.FFmpegError, StopIteration, ValueError) as exc:
            raise ValueError(f"cannot decode image {str(path)!r}: {exc}") from exc
    width, height = fit_size(pixels.shape[1], pixels.shape[0])
    return resize_nearest(pixels, width, height)
