"""Pixels already scaled to a tile → rows of terminal text (palette characters plus ANSI SGR colour).

Rules (ACIP.md 5.2): luminance Y = (77R + 150G + 29B + 128) >> 8, 64 buckets i = Y >> 2, palette index
(i*(n-1) + 31) // 63. In colour modes an SGR sequence is written before a cell only when its colour differs
from the previous cell of the same row; every coloured row ends with ESC[0m so padding, gaps and the newline
never inherit a colour (and so the frame ends with ESC[0m). 16 colours use the nearest xterm colour without
dithering, which keeps every cell independent and therefore cacheable per tile.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from .spec import COLOR_16, COLOR_256, COLOR_TRUECOLOR, RENDER_BACKGROUND, RenderSpec

RESET = b"\x1b[0m"
HALF_BLOCK = "▀".encode()  # U+2580 upper half block: fg paints the top pixel, bg the bottom one

# xterm's default 16 colours; the nearest one (squared RGB distance, lowest index on ties) is used.
XTERM16 = np.array(
    [
        (0, 0, 0), (205, 0, 0), (0, 205, 0), (205, 205, 0), (0, 0, 238), (205, 0, 205), (0, 205, 205),
        (229, 229, 229), (127, 127, 127), (255, 0, 0), (0, 255, 0), (255, 255, 0), (92, 92, 255),
        (255, 0, 255), (0, 255, 255), (255, 255, 255),
    ],
    dtype=np.int32,
)  # fmt: skip
_XTERM16_NORM = (XTERM16**2).sum(axis=1)
CUBE_LEVELS = np.array([0, 95, 135, 175, 215, 255], dtype=np.int32)


class _Table:
    """Byte strings packed into a (K, L) uint8 array plus lengths, for vectorised lookup."""

    __slots__ = ("data", "lens")

    def __init__(self, items: list[bytes]) -> None:
        width = max(1, max(len(s) for s in items))
        self.data = np.zeros((len(items), width), dtype=np.uint8)
        self.lens = np.array([len(s) for s in items], dtype=np.int32)
        for i, s in enumerate(items):
            self.data[i, : len(s)] = np.frombuffer(s, dtype=np.uint8)


@lru_cache(maxsize=64)
def _palette_table(palette: str) -> tuple[_Table, np.ndarray]:
    """Palette characters as a table, and the luminance (0..255) → palette index map."""
    chars = [c.encode() for c in palette]
    n = len(chars)
    buckets = np.arange(256, dtype=np.int32) >> 2
    y_to_index = ((buckets * (n - 1) + 31) // 63).astype(np.intp)
    return _Table(chars), y_to_index


@lru_cache(maxsize=8)
def _truecolor_tables(background: bool) -> tuple[_Table, _Table, _Table]:
    lead = b"\x1b[48;2;" if background else b"\x1b[38;2;"
    red = _Table([lead + str(v).encode() + b";" for v in range(256)])
    green = _Table([str(v).encode() + b";" for v in range(256)])
    blue = _Table([str(v).encode() + b"m" for v in range(256)])
    return red, green, blue


@lru_cache(maxsize=8)
def _indexed_table(color_level: int, background: bool) -> _Table:
    if color_level == COLOR_256:
        lead = b"\x1b[48;5;" if background else b"\x1b[38;5;"
        return _Table([lead + str(v).encode() + b"m" for v in range(256)])
    base, bright = (40, 100) if background else (30, 90)
    return _Table([f"\x1b[{base + i if i < 8 else bright + i - 8}m".encode() for i in range(16)])


def luminance(pixels: np.ndarray) -> np.ndarray:
    """BT.601 8-bit luminance of an (..., 3) uint8 array, as the C renderer computes it."""
    p = pixels.astype(np.int32)
    return (77 * p[..., 0] + 150 * p[..., 1] + 29 * p[..., 2] + 128) >> 8


def _nearest_level(v: np.ndarray) -> np.ndarray:
    # Midpoints between the xterm cube levels 0,95,135,175,215,255.
    return np.searchsorted(np.array([48, 115, 155, 195, 235]), v, side="right")


def rgb_to_256(pixels: np.ndarray) -> np.ndarray:
    """xterm 256-colour index: nearest of the 6x6x6 cube (16..231) and the grey ramp (232..255)."""
    p = pixels.astype(np.int32)
    qi = _nearest_level(p)
    cube = CUBE_LEVELS[qi]
    cube_err = ((p - cube) ** 2).sum(-1)
    cube_index = 16 + 36 * qi[..., 0] + 6 * qi[..., 1] + qi[..., 2]
    avg = p.sum(-1) // 3
    grey_k = np.clip((avg - 3) // 10, 0, 23)  # grey levels 8 + 10k; (avg-3)//10 rounds to the nearest
    grey = 8 + 10 * grey_k
    grey_err = ((p - grey[..., None]) ** 2).sum(-1)
    return np.where(grey_err < cube_err, 232 + grey_k, cube_index)


def rgb_to_16(pixels: np.ndarray) -> np.ndarray:
    """Nearest xterm 16-colour index (no dithering)."""
    # |p - c|^2 = |p|^2 - 2 p.c + |c|^2; |p|^2 is the same for every candidate, so compare the rest.
    # Integer matmul keeps it exact (ties go to the lowest index, as with the direct distance).
    p = pixels.reshape(-1, 3).astype(np.int32)
    score = _XTERM16_NORM - 2 * (p @ XTERM16.T)
    return np.argmin(score, axis=1).reshape(pixels.shape[:-1])


def _changed(codes: np.ndarray) -> np.ndarray:
    """True where a cell's colour differs from the previous cell of its row (first cell always)."""
    out = np.ones(codes.shape[:2], dtype=bool)
    if codes.ndim == 3:
        out[:, 1:] = (codes[:, 1:] != codes[:, :-1]).any(-1)
    else:
        out[:, 1:] = codes[:, 1:] != codes[:, :-1]
    return out


Segment = tuple[_Table, np.ndarray | None, np.ndarray | None]


def _assemble(rows: int, cols: int, segments: list[Segment]) -> list[bytes]:
    """Concatenate, cell by cell in row-major order, each segment's table entry where present.

    Done as one boolean-mask gather over a (rows, cols, width) byte array: no Python loop per cell.
    """
    datas = []
    masks = []
    total = np.zeros((rows, cols), dtype=np.int64)
    for table, index, present in segments:
        width = table.data.shape[1]
        if index is None:
            data = np.broadcast_to(table.data[0], (rows, cols, width))
            lens = np.full((rows, cols), table.lens[0], dtype=np.int32)
        else:
            data = table.data[index]
            lens = table.lens[index]
        if present is not None:
            lens = np.where(present, lens, 0)
        datas.append(data)
        masks.append(np.arange(width, dtype=np.int32) < lens[..., None])
        total += lens
    big = np.concatenate(datas, axis=2)
    mask = np.concatenate(masks, axis=2)
    blob = big[mask].tobytes()
    ends = np.cumsum(total.sum(axis=1)).tolist()
    starts = [0, *ends[:-1]]
    return [blob[a:b] for a, b in zip(starts, ends)]


def _color_segments(pixels: np.ndarray, color_level: int, background: bool) -> list[Segment]:
    if color_level == COLOR_TRUECOLOR:
        red, green, blue = _truecolor_tables(background)
        changed = _changed(pixels)
        return [
            (red, pixels[..., 0], changed),
            (green, pixels[..., 1], changed),
            (blue, pixels[..., 2], changed),
        ]
    codes = rgb_to_256(pixels) if color_level == COLOR_256 else rgb_to_16(pixels)
    return [(_indexed_table(color_level, background), codes, _changed(codes))]


def render_rows(pixels: np.ndarray, spec: RenderSpec) -> list[bytes]:
    """Render an already-scaled block to one byte string per cell row (no newlines).

    `pixels` is (h, w, 3) uint8 for one pixel per cell, or (2h, w, 3) when `spec.half_block`
    (each cell shows two pixel rows).
    """
    if spec.half_block:
        top = np.ascontiguousarray(pixels[0::2])
        bottom = np.ascontiguousarray(pixels[1::2])
        rows, cols = top.shape[:2]
        segments = _color_segments(top, spec.color_level, background=False)
        segments += _color_segments(bottom, spec.color_level, background=True)
        segments.append((_Table([HALF_BLOCK]), None, None))
        return [r + RESET for r in _assemble(rows, cols, segments)]

    rows, cols = pixels.shape[:2]
    chars, y_to_index = _palette_table(spec.palette)
    char_index = y_to_index[luminance(pixels)]
    if not spec.colored:
        if chars.data.shape[1] == 1:
            # Single-byte palette: the character bytes are the frame bytes.
            grid = chars.data[char_index, 0]
            return [row.tobytes() for row in grid]
        return _assemble(rows, cols, [(chars, char_index, None)])
    segments = _color_segments(pixels, spec.color_level, background=spec.render_mode == RENDER_BACKGROUND)
    segments.append((chars, char_index, None))
    return [r + RESET for r in _assemble(rows, cols, segments)]


__all__ = ["COLOR_16", "HALF_BLOCK", "RESET", "luminance", "render_rows", "rgb_to_16", "rgb_to_256"]
