"""Frames read back through a small terminal model: every cell must show the character and colours the
spec prescribes for its pixel(s). The model and the expectations are written independently of the renderer."""

import re
from functools import lru_cache

import numpy as np
import pytest

from asciichat_server.media import Compositor, RenderSpec, VideoSource, grid_layout

XTERM16 = [
    (0, 0, 0), (205, 0, 0), (0, 205, 0), (205, 205, 0), (0, 0, 238), (205, 0, 205), (0, 205, 205),
    (229, 229, 229), (127, 127, 127), (255, 0, 0), (0, 255, 0), (255, 255, 0), (92, 92, 255),
    (255, 0, 255), (0, 255, 255), (255, 255, 255),
]  # fmt: skip
LEVELS = [0, 95, 135, 175, 215, 255]
XTERM256 = {
    16 + 36 * r + 6 * g + b: (LEVELS[r], LEVELS[g], LEVELS[b]) for r in range(6) for g in range(6) for b in range(6)
}
XTERM256.update({232 + k: (8 + 10 * k,) * 3 for k in range(24)})
SGR = re.compile(r"\x1b\[([0-9;]*)m")


def display(frame: bytes) -> list[list[tuple[str, object, object]]]:
    """Apply the frame to an empty screen: returns rows of (char, fg, bg); colours as the SGR gave them."""
    text = frame.decode("utf-8")
    rows: list[list[tuple[str, object, object]]] = [[]]
    fg = bg = None
    pos = 0
    while pos < len(text):
        m = SGR.match(text, pos)
        if m:
            params = [int(p) for p in m.group(1).split(";")] if m.group(1) else [0]
            i = 0
            while i < len(params):
                p = params[i]
                if p == 0:
                    fg = bg = None
                elif p in (38, 48) and params[i + 1] == 2:
                    colour = ("rgb", tuple(params[i + 2 : i + 5]))
                    fg, bg = (colour, bg) if p == 38 else (fg, colour)
                    i += 4
                elif p in (38, 48) and params[i + 1] == 5:
                    colour = ("256", params[i + 2])
                    fg, bg = (colour, bg) if p == 38 else (fg, colour)
                    i += 2
                elif 30 <= p <= 37 or 90 <= p <= 97:
                    fg = ("16", p - 30 if p < 90 else p - 90 + 8)
                elif 40 <= p <= 47 or 100 <= p <= 107:
                    bg = ("16", p - 40 if p < 100 else p - 100 + 8)
                else:
                    raise AssertionError(f"unexpected SGR parameter {p}")
                i += 1
            pos = m.end()
            continue
        ch = text[pos]
        assert ch != "\x1b", f"stray escape at {pos}"
        if ch == "\n":
            rows.append([])
        else:
            rows[-1].append((ch, fg, bg))
        pos += 1
    assert (fg is None and bg is None) or not frame, "frame must end with the attributes reset"
    return rows


def nearest(table, rgb) -> int:
    items = table.items() if isinstance(table, dict) else enumerate(table)
    return min(items, key=lambda kv: (sum((int(a) - b) ** 2 for a, b in zip(rgb, kv[1])), kv[0]))[0]


def expected_colour(level: int, rgb) -> object:
    return _expected_colour(level, tuple(int(v) for v in rgb))


@lru_cache(maxsize=4096)
def _expected_colour(level: int, rgb: tuple[int, int, int]) -> object:
    if level == 3:
        return ("rgb", rgb)
    if level == 2:
        return ("256", nearest(XTERM256, rgb))
    return ("16", nearest(XTERM16, rgb))


def expected_char(palette: str, rgb) -> str:
    r, g, b = (int(v) for v in rgb)
    y = (77 * r + 150 * g + 29 * b + 128) >> 8
    return palette[((y >> 2) * (len(palette) - 1) + 31) // 63]


def sample(pixels: np.ndarray, w: int, h: int, x: int, y: int):
    src_h, src_w = pixels.shape[:2]
    return pixels[y * src_h // h, x * src_w // w]


CASES = [(c, m) for c in range(4) for m in range(3)]


@pytest.mark.parametrize(("color_level", "render_mode"), CASES)
@pytest.mark.parametrize("seed", range(3))
def test_single_source_cells(color_level: int, render_mode: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    src_w, src_h = int(rng.integers(8, 90)), int(rng.integers(8, 70))
    # low-entropy colours so runs of equal colour (no SGR) occur as well as changes
    pixels = (rng.integers(0, 4, (src_h, src_w, 3)) * 85).astype(np.uint8)
    palette = ["   ...',;:clodxkO0KXNWM", "   ░░▒▒▓▓██", "·•●⬤"][seed]
    padded = seed != 1
    spec = RenderSpec(int(rng.integers(10, 70)), int(rng.integers(5, 30)), color_level, render_mode, palette, padded)
    frame = Compositor().render([VideoSource(1, 1, pixels)], spec)
    (rect,) = grid_layout(((src_w, src_h),), spec.cols, spec.rows)
    screen = display(frame)
    top, left = ((spec.rows - rect.h) // 2, (spec.cols - rect.w) // 2) if padded else (0, 0)
    assert all(row == [] for row in screen[:top])  # blank lines above, nothing on them
    screen = screen[top:]
    assert len(screen) == rect.h
    half = render_mode == 2 and color_level > 0
    for y, row in enumerate(screen):
        assert len(row) == rect.w + left
        assert row[:left] == [(" ", None, None)] * left  # padding is never coloured
        row = row[left:]
        for x, (ch, fg, bg) in enumerate(row):
            if half:
                top = sample(pixels, rect.w, rect.h * 2, x, 2 * y)
                bottom = sample(pixels, rect.w, rect.h * 2, x, 2 * y + 1)
                assert (ch, fg, bg) == ("▀", expected_colour(color_level, top), expected_colour(color_level, bottom))
                continue
            px = sample(pixels, rect.w, rect.h, x, y)
            assert ch == expected_char(palette, px)
            if color_level == 0:
                assert fg is None and bg is None
            elif render_mode == 1:
                assert fg is None and bg == expected_colour(color_level, px)
            else:
                assert bg is None
                if ch != " ":  # a blank shows no foreground colour
                    assert fg == expected_colour(color_level, px)


@pytest.mark.parametrize("n", [2, 5, 9])
def test_grid_cells(n: int) -> None:
    rng = np.random.default_rng(n)
    sizes = [(int(rng.integers(16, 64)), int(rng.integers(12, 48))) for _ in range(n)]
    sources = [
        VideoSource(i, 1, (rng.integers(0, 3, (h, w, 3)) * 127).astype(np.uint8)) for i, (w, h) in enumerate(sizes)
    ]
    spec = RenderSpec(120, 40, color_level=3, render_mode=1)
    screen = display(Compositor().render(sources, spec))
    assert len(screen) == 40 and all(len(row) == 120 for row in screen)
    owner = {}
    for i, rect in enumerate(grid_layout(tuple(sizes), 120, 40)):
        for y in range(rect.y, rect.y + rect.h):
            for x in range(rect.x, rect.x + rect.w):
                owner[(x, y)] = (i, rect)
    for y, row in enumerate(screen):
        for x, (ch, fg, bg) in enumerate(row):
            if (x, y) not in owner:
                assert (ch, fg, bg) == (" ", None, None)  # gaps are plain, uncoloured blanks
                continue
            i, rect = owner[(x, y)]
            px = sample(sources[i].pixels, rect.w, rect.h, x - rect.x, y - rect.y)
            assert (ch, fg, bg) == (expected_char(spec.palette, px), None, expected_colour(3, px))
