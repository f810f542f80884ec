"""Pixels already scaled to a tile → rows of terminal text (palette characters plus ANSI SGR colour).

Rules (ACIP.md 5.2): luminance Y = (77R + 150G + 29B + 128) >> 8, 64 buckets i = Y >> 2, palette index
(i*(n-1) + 31) // 63. In colour modes an SGR sequence is written before a cell only when its colour differs
from the previous cell of the same row; every coloured row ends with ESC[0m so padding, gaps and the newline
never inherit a colour (and so the frame ends with ESC[0m). 16 colours use the nearest xterm colour without
dithering, which keeps every cell independent and therefore cacheable per tile. Background mode paints the
pixel colour behind the palette character, which keeps the terminal's default foreground. Half-block mode
writes U+2580 with the top pixel as foreground and the bottom pixel as background.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from .spec import COLOR_256, COLOR_TRUECOLOR, RENDER_BACKGROUND, RenderSpec

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
_XTERM16_NORM = (XTERM16**2).sum(axis=1).astype(np.float32)
_XTERM16_T = XTERM16.T.astype(np.float32).copy()
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
    y = 77 * pixels[..., 0].astype(np.int32)
    y += 150 * pixels[..., 1].astype(np.int32)
    y += 29 * pixels[..., 2].astype(np.int32) + 128
    return y >> 8


def _nearest_level(v: np.ndarray) -> np.ndarray:
    # Midpoints between the xterm cube levels 0,95,135,175,215,255.
    return np.searchsorted(np.array([48, 115, 155, 195, 235]), v, side="right")


_V = np.arange(256)
_CUBE_INDEX = _nearest_level(_V).astype(np.intp)  # per channel value: nearest cube level
_CUBE_ERR = ((_V - CUBE_LEVELS[_CUBE_INDEX]) ** 2).astype(np.int32)
_GREY_K = np.clip((_V - 3) // 10, 0, 23)  # grey levels 8 + 10k: (avg - 3) // 10 rounds to the nearest


def rgb_to_256(pixels: np.ndarray) -> np.ndarray:
    """xterm 256-colour index: nearest of the 6x6x6 cube (16..231) and the grey ramp (232..255)."""
    # Channel-wise lookups and explicit sums: reductions over a length-3 axis are slow in numpy.
    r, g, b = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    cube_err = _CUBE_ERR[r] + _CUBE_ERR[g] + _CUBE_ERR[b]
    cube_index = 16 + 36 * _CUBE_INDEX[r] + 6 * _CUBE_INDEX[g] + _CUBE_INDEX[b]
    ri, gi, bi = r.astype(np.int32), g.astype(np.int32), b.astype(np.int32)
    grey_k = _GREY_K[(ri + gi + bi) // 3]
    grey = 8 + 10 * grey_k
    dr, dg, db = ri - grey, gi - grey, bi - grey
    grey_err = dr * dr + dg * dg + db * db
    return np.where(grey_err < cube_err, 232 + grey_k, cube_index)


def rgb_to_16(pixels: np.ndarray) -> np.ndarray:
    """Nearest xterm 16-colour index (no dithering)."""
    # |p - c|^2 = |p|^2 - 2 p.c + |c|^2; |p|^2 is the same for every candidate, so compare the rest.
    # float32 is exact here (all values < 2^24), so ties still go to the lowest index.
    p = pixels.reshape(-1, 3).astype(np.float32)
    score = _XTERM16_NORM - 2 * (p @ _XTERM16_T)
    return np.argmin(score, axis=1).reshape(pixels.shape[:-1])


def _changed(codes: np.ndarray) -> np.ndarray:
    """True where a cell's colour differs from the previous cell of its row (first cell always)."""
    if codes.ndim == 3:  # RGB: compare one packed integer per cell rather than reducing over channels
        codes = (codes[..., 0].astype(np.int32) << 16) | (codes[..., 1].astype(np.int32) << 8) | codes[..., 2]
    out = np.ones(codes.shape, dtype=bool)
    np.not_equal(codes[:, 1:], codes[:, :-1], out=out[:, 1:])
    return out


Segment = tuple[_Table, np.ndarray | None, np.ndarray | None]


class _Stack:
    """Several tables stacked into one padded byte matrix so one gather serves every segment."""

    __slots__ = ("flat", "lens", "offsets", "width")

    def __init__(self, tables: tuple[_Table, ...]) -> None:
        self.width = max(t.data.shape[1] for t in tables)
        self.offsets = np.cumsum([0] + [t.data.shape[0] for t in tables]).astype(np.int32)
        data = np.zeros((int(self.offsets[-1]), self.width), dtype=np.uint8)
        self.lens = np.zeros(int(self.offsets[-1]), dtype=np.int32)
        for offset, table in zip(self.offsets, tables):
            data[offset : offset + table.data.shape[0], : table.data.shape[1]] = table.data
            self.lens[offset : offset + table.data.shape[0]] = table.lens
        self.flat = data.reshape(-1)


@lru_cache(maxsize=64)
def _stack(tables: tuple[_Table, ...]) -> _Stack:
    return _Stack(tables)


def _assemble(rows: int, cols: int, segments: list[Segment]) -> list[bytes]:
    """Concatenate, cell by cell in row-major order, each segment's table entry where present.

    Vectorised as a run-length gather: every (cell, segment) piece becomes a run of byte positions in the
    stacked table (np.repeat of its start, plus a running index), so there is no Python loop per cell.
    """
    stack = _stack(tuple(table for table, _, _ in segments))
    pieces = np.empty((rows, cols, len(segments)), dtype=np.int32)
    for k, (_, index, _) in enumerate(segments):
        pieces[..., k] = stack.offsets[k] if index is None else index + stack.offsets[k]
    lens = stack.lens[pieces]
    for k, (_, _, present) in enumerate(segments):
        if present is not None:
            lens[..., k] *= present
    lens = lens.reshape(-1)
    ends = np.cumsum(lens)
    total = int(ends[-1]) if len(ends) else 0
    # byte position = piece row start in the stacked table + (output position - piece output start)
    shift = pieces.reshape(-1) * stack.width - (ends - lens).astype(np.int32)
    positions = np.repeat(shift, lens) + np.arange(total, dtype=np.int32)
    blob = stack.flat[positions].tobytes()
    row_ends = ends.reshape(rows, -1)[:, -1].tolist()
    row_starts = [0, *row_ends[:-1]]
    return [blob[a:b] for a, b in zip(row_starts, row_ends)]


_HALF_BLOCK_TABLE = _Table([HALF_BLOCK])


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
        segments.append((_HALF_BLOCK_TABLE, None, None))
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


__all__ = ["HALF_BLOCK", "RESET", "luminance", "render_rows", "rgb_to_16", "rgb_to_256"]
