"""Where each video goes on a receiver's terminal: aspect fitting and the grid of up to 9 tiles (ACIP.md 5.2).

Everything here is in terminal cells. A cell is twice as tall as wide (cell aspect 2.0), so an image of
W x H pixels covers W x H/2 cells at natural proportions. The C server lays the grid out on a cols x 2*rows
pixel canvas; working in cells instead keeps every tile on whole cell rows (so tiles can be rendered and
cached on their own, half-block included) and differs from it by at most one pixel row per tile.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

MAX_TILES = 9  # the C server draws at most 9 videos [c41 src/server/stream.c]
MIN_CELL_COLS = 20  # grid cells smaller than this are not considered (ACIP.md 5.2)
MIN_CELL_ROWS = 10
CELL_ASPECT = 2.0


@dataclass(frozen=True)
class Rect:
    x: int
    y: int
    w: int
    h: int


def _round(x: float) -> int:
    # C's round(): halves away from zero (Python's round() would go to even).
    return math.floor(x + 0.5)


def fit_cells(img_w: int, img_h: int, box_cols: int, box_rows: int) -> tuple[int, int]:
    """Largest (cols, rows) with the image's aspect that fits the box, as the C server computes it."""
    w = _round(box_rows * img_w / img_h * CELL_ASPECT)
    if w <= box_cols:
        return max(1, w), box_rows
    h = _round(box_cols / CELL_ASPECT * img_h / img_w)
    return box_cols, max(1, min(box_rows, h))


def tiles_for(n_sources: int) -> int:
    """Number of videos drawn for n sources."""
    return max(0, min(n_sources, MAX_TILES))


def _candidate(
    sizes: tuple[tuple[int, int], ...], cols: int, rows: int, grid_cols: int
) -> tuple[float, int, int, bool]:
    n = len(sizes)
    grid_rows = math.ceil(n / grid_cols)
    cell_w, cell_h = cols // grid_cols, rows // grid_rows
    if cell_w < 1 or cell_h < 1:
        return -1.0, grid_rows, cell_w, False
    covered = 0
    for w, h in sizes:
        fw, fh = fit_cells(w, h, cell_w, cell_h)
        covered += fw * fh
    score = covered / (grid_cols * grid_rows * cell_w * cell_h)
    empty = grid_cols * grid_rows - n
    acceptable = empty <= grid_cols and cell_w >= MIN_CELL_COLS and cell_h >= MIN_CELL_ROWS
    return score, grid_rows, cell_w, acceptable


@lru_cache(maxsize=512)
def choose_grid(sizes: tuple[tuple[int, int], ...], cols: int, rows: int) -> tuple[int, int]:
    """(grid_cols, grid_rows) with the best coverage score.

    For c = 1..N columns, r = ceil(N / c); layouts whose cells are smaller than 20x10 cells or that leave
    more than c cells empty are skipped; score = area of the aspect-fitted videos / area of the cells.
    If the terminal is too small for any acceptable layout, the best-scoring one is used anyway.
    """
    n = len(sizes)
    if n <= 1:
        return 1, 1
    best: tuple[float, int, int] | None = None
    fallback: tuple[float, int, int] | None = None
    for grid_cols in range(1, n + 1):
        score, grid_rows, _, acceptable = _candidate(sizes, cols, rows, grid_cols)
        if score < 0:
            continue
        if acceptable and (best is None or score > best[0]):
            best = (score, grid_cols, grid_rows)
        if fallback is None or score > fallback[0]:
            fallback = (score, grid_cols, grid_rows)
    chosen = best or fallback
    if chosen is None:  # terminal narrower/shorter than the number of videos: one row of 1-cell tiles
        return n, 1
    return chosen[1], chosen[2]


@lru_cache(maxsize=512)
def grid_layout(sizes: tuple[tuple[int, int], ...], cols: int, rows: int) -> tuple[Rect, ...]:
    """Tile rectangles (in cells) for videos of the given pixel sizes, in source order, row-major.

    One video: fitted to the whole terminal at (0, 0) (the caller centres it if the receiver wants padding).
    Several: each video is fitted to its grid cell and centred in it; the grid itself is centred.
    """
    sizes = sizes[:MAX_TILES]
    if not sizes:
        return ()
    if len(sizes) == 1:
        w, h = fit_cells(sizes[0][0], sizes[0][1], cols, rows)
        return (Rect(0, 0, w, h),)
    grid_cols, grid_rows = choose_grid(sizes, cols, rows)
    # A terminal with fewer cells than videos: 1-cell grid cells, and videos that fall off are not drawn.
    cell_w, cell_h = max(1, cols // grid_cols), max(1, rows // grid_rows)
    off_x, off_y = max(0, (cols - grid_cols * cell_w) // 2), max(0, (rows - grid_rows * cell_h) // 2)
    rects = []
    for i, (img_w, img_h) in enumerate(sizes):
        gy, gx = divmod(i, grid_cols)
        w, h = fit_cells(img_w, img_h, cell_w, cell_h)
        x = off_x + gx * cell_w + (cell_w - w) // 2
        y = off_y + gy * cell_h + (cell_h - h) // 2
        if x >= cols or y >= rows:
            rects.append(Rect(min(x, cols), min(y, rows), 0, 0))
        else:
            rects.append(Rect(x, y, min(w, cols - x), min(h, rows - y)))
    return tuple(rects)
