"""Grid layouts for 1..9 sources (rectangles worked out by hand from ACIP.md 5.2) and render caching."""

import math

import numpy as np
import pytest

from asciichat_server.media import Compositor, RenderSpec, VideoSource, choose_grid, grid_layout, tiles_for
from asciichat_server.media.layout import Rect

VGA = (320, 240)  # 4:3


def test_two_sources_side_by_side() -> None:
    # 80x24, 4:3. c=1: cells 80x12, fit (32,12): 768/1920 = 0.40. c=2: cells 40x24, w = round(24*4/3*2) = 64
    # > 40 -> (40, round(20*3/4) = 15): 1200/1920 = 0.625 -> side by side, centred vertically (24-15)//2 = 4.
    assert choose_grid((VGA, VGA), 80, 24) == (2, 1)
    assert grid_layout((VGA, VGA), 80, 24) == (Rect(0, 4, 40, 15), Rect(40, 4, 40, 15))


def test_three_sources_two_by_two_row_major() -> None:
    # c=1: cells 80x8 (< 10 rows, skipped). c=2: cells 40x12, fit (32,12): 1152/1920 = 0.6.
    # c=3: cells 26x24, fit (26, round(9.75) = 10): 780/1872 = 0.417. -> 2x2, one empty cell.
    assert choose_grid((VGA,) * 3, 80, 24) == (2, 2)
    assert grid_layout((VGA,) * 3, 80, 24) == (Rect(4, 0, 32, 12), Rect(44, 0, 32, 12), Rect(4, 12, 32, 12))


def test_four_sources() -> None:
    # c=2: 40x12 cells, (32,12) each: 1536/1920 = 0.8 beats c=3 (0.556) and c=4 (0.333).
    assert choose_grid((VGA,) * 4, 80, 24) == (2, 2)


def test_nine_sources_3x3() -> None:
    # 160x48: cells 53x16, fit w = round(16*8/3) = 43 -> (43,16): 6192/7632 = 0.811; c=4 gives 0.703.
    rects = grid_layout((VGA,) * 9, 160, 48)
    assert choose_grid((VGA,) * 9, 160, 48) == (3, 3)
    assert rects == tuple(Rect(5 + 53 * gx, 16 * gy, 43, 16) for gy in range(3) for gx in range(3))


def test_small_terminal_falls_back_to_best_score() -> None:
    # 80x24 with 9 sources: no layout has 20x10-cell cells; the best score (3x3, 0.808) is used.
    assert choose_grid((VGA,) * 9, 80, 24) == (3, 3)


def test_portrait_sources_stack_horizontally() -> None:
    # 240x320 (portrait) at 80x24: c=2 cells 40x24 -> w = round(24*240/320*2) = 36: 864*2/1920 = 0.9.
    assert choose_grid(((240, 320),) * 2, 80, 24) == (2, 1)


@pytest.mark.parametrize("cols,rows", [(80, 24), (160, 48), (200, 60), (40, 20)])
@pytest.mark.parametrize("n", range(1, 10))
def test_layout_invariants(n: int, cols: int, rows: int) -> None:
    sizes = ((320, 240), (640, 360), (240, 320), (480, 270), (320, 240), (100, 100), (320, 240), (640, 480), (64, 48))
    rects = grid_layout(sizes[:n], cols, rows)
    assert len(rects) == tiles_for(n) == n
    cells = set()
    for rect, (w, h) in zip(rects, sizes[:n]):
        assert rect.w >= 1 and rect.h >= 1
        assert rect.x >= 0 and rect.x + rect.w <= cols and rect.y >= 0 and rect.y + rect.h <= rows
        covered = {(x, y) for x in range(rect.x, rect.x + rect.w) for y in range(rect.y, rect.y + rect.h)}
        assert not covered & cells, "tiles overlap"
        cells |= covered
        # aspect preserved up to rounding of one cell in either direction
        if rect.w > 2 and rect.h > 2:
            assert (rect.w - 1) / (2 * (rect.h + 1)) <= w / h <= (rect.w + 1) / (2 * (rect.h - 1))
    if n > 1:
        gc, gr = choose_grid(sizes[:n], cols, rows)
        assert gr == math.ceil(n / gc)
        cw, ch = cols // gc, rows // gr
        # row-major, source order: tile i sits in grid cell (i // gc, i % gc)
        for i, rect in enumerate(rects):
            cy, cx = divmod(i, gc)
            ox, oy = (cols - gc * cw) // 2, (rows - gr * ch) // 2
            assert ox + cx * cw <= rect.x and rect.x + rect.w <= ox + (cx + 1) * cw
            assert oy + cy * ch <= rect.y and rect.y + rect.h <= oy + (cy + 1) * ch


def test_more_than_nine_sources_draws_nine() -> None:
    assert tiles_for(12) == 9 and tiles_for(0) == 0
    srcs = [VideoSource(i, 1, np.full((24, 32, 3), 255, np.uint8)) for i in range(12)]
    frame = Compositor().render(srcs, RenderSpec(160, 48))
    assert frame.count(b"M") == sum(r.w * r.h for r in grid_layout(((32, 24),) * 9, 160, 48))


def test_grid_frame_text_places_tiles() -> None:
    # Two white 4:3 sources at 80x24: tiles (0,4,40,15) and (40,4,40,15); everything else is spaces.
    white = np.full((240, 320, 3), 255, np.uint8)
    frame = Compositor().render([VideoSource(1, 1, white), VideoSource(2, 1, white)], RenderSpec(80, 24))
    lines = frame.split(b"\n")
    assert len(lines) == 24 and all(len(line) == 80 for line in lines)
    for y, line in enumerate(lines):
        assert line == (b"M" * 80 if 4 <= y < 19 else b" " * 80)
    assert Compositor().render([], RenderSpec(80, 24)) == b""


def test_grid_colour_rows_reset_before_gaps() -> None:
    red = np.zeros((240, 320, 3), np.uint8)
    red[..., 0] = 255
    frame = Compositor().render([VideoSource(1, 1, red)] * 3, RenderSpec(80, 24, color_level=1))
    # 2x2 grid, tiles (4,0,32,12) (44,0,32,12) (4,12,32,12): two tile segments on the first row
    first = frame.split(b"\n")[0]
    seg = b"\x1b[91m" + b"," * 32 + b"\x1b[0m"
    assert first == b" " * 4 + seg + b" " * 8 + seg + b" " * 4
    assert frame.endswith(b"\x1b[0m")


def test_same_spec_renders_once_for_32_receivers() -> None:
    rng = np.random.default_rng(1)
    sources = [VideoSource(i, 7, rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)) for i in range(9)]
    comp = Compositor()
    spec = RenderSpec(80, 24, color_level=3)
    frames = [comp.render(list(sources), spec) for _ in range(32)]
    assert all(f is frames[0] for f in frames)
    assert comp.stats.frames_rendered == 1 and comp.stats.frame_hits == 31
    assert comp.stats.tiles_rendered == 9
    # an equal but distinct spec object hits the same entry
    assert comp.render(sources, RenderSpec(80, 24, color_level=3)) is frames[0]


def test_one_new_frame_rerenders_one_tile() -> None:
    rng = np.random.default_rng(2)
    pix = [rng.integers(0, 256, (240, 320, 3), dtype=np.uint8) for _ in range(4)]
    comp = Compositor()
    spec = RenderSpec(160, 48, color_level=2)
    comp.render([VideoSource(i, 1, p) for i, p in enumerate(pix)], spec)
    assert comp.stats.tiles_rendered == 4
    new = [VideoSource(i, 2 if i == 3 else 1, p) for i, p in enumerate(pix)]
    comp.render(new, spec)
    assert comp.stats.tiles_rendered == 5 and comp.stats.tile_hits == 3 and comp.stats.frames_rendered == 2


def test_specs_differing_in_colour_share_scaled_pixels() -> None:
    pix = np.random.default_rng(3).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    comp = Compositor()
    for level in range(4):
        comp.render([VideoSource(1, 1, pix)], RenderSpec(80, 24, color_level=level))
    assert comp.stats.scales == 1 and comp.stats.scale_hits == 3
    assert comp.stats.tiles_rendered == 4


def test_caches_are_bounded() -> None:
    pix = np.random.default_rng(4).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    comp = Compositor(frame_cache_bytes=200_000, tile_cache_bytes=200_000, scaled_cache_bytes=100_000)
    spec = RenderSpec(80, 24, color_level=3)
    for seq in range(60):
        comp.render([VideoSource(1, seq, pix)], spec)
    sizes = comp.cache_sizes()
    assert sizes["frames_bytes"] <= 200_000 and sizes["tiles_bytes"] <= 200_000 and sizes["scaled_bytes"] <= 100_000
    assert sizes["frames"] < 60
    comp.forget(1)
    assert comp.cache_sizes()["frames"] == comp.cache_sizes()["tiles"] == comp.cache_sizes()["scaled"] == 0


@pytest.mark.parametrize(("color_level", "render_mode"), [(3, 2), (3, 0), (0, 0)])
def test_huge_terminal_frame_stays_under_client_display_limit(color_level: int, render_mode: int) -> None:
    # Worst case content: noise, so every cell changes colour. The C client shows at most 1 MiB of a frame.
    noise = np.random.default_rng(5).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    spec = RenderSpec(4096, 4096, color_level=color_level, render_mode=render_mode, palette="·•●⬤")
    frame = Compositor().render([VideoSource(1, 1, noise)], spec)
    assert 100_000 < len(frame) <= 1024 * 1024
    frame.decode("utf-8")  # never splits a multi-byte character


@pytest.mark.parametrize(("cols", "rows"), [(1, 1), (2, 1), (5, 3), (19, 9)])
@pytest.mark.parametrize("n", [1, 2, 9])
def test_tiny_terminals(cols: int, rows: int, n: int) -> None:
    srcs = [VideoSource(i, 1, np.full((240, 320, 3), 200, np.uint8)) for i in range(n)]
    frame = Compositor().render(srcs, RenderSpec(cols, rows, color_level=3, wants_padding=True))
    rects = [r for r in grid_layout(((320, 240),) * n, cols, rows) if r.w > 0]
    assert rects
    covered = [(x, y) for r in rects for x in range(r.x, r.x + r.w) for y in range(r.y, r.y + r.h)]
    assert len(covered) == len(set(covered)) and all(0 <= x < cols and 0 <= y < rows for x, y in covered)
    lines = frame.split(b"\n")
    assert 1 <= len(lines) <= rows
    text_width = [len(line.replace(b"\x1b[38;2;200;200;200m", b"").replace(b"\x1b[0m", b"")) for line in lines]
    assert max(text_width) <= cols


try:
    from hypothesis import given, settings
    from hypothesis import strategies as st
except ImportError:  # pragma: no cover - hypothesis is a declared test dependency
    pass
else:

    @settings(max_examples=100, deadline=None)
    @given(
        st.lists(st.tuples(st.integers(1, 2000), st.integers(1, 2000)), min_size=1, max_size=12),
        st.integers(1, 400),
        st.integers(1, 150),
    )
    def test_layout_properties(sizes: list[tuple[int, int]], cols: int, rows: int) -> None:
        rects = grid_layout(tuple(sizes), cols, rows)
        assert len(rects) == min(len(sizes), 9)
        for i, rect in enumerate(rects):
            assert rect.w >= 0 and rect.h >= 0
            assert rect.x >= 0 and rect.y >= 0 and rect.x + rect.w <= cols and rect.y + rect.h <= rows
            for other in rects[:i]:
                disjoint = (
                    rect.x + rect.w <= other.x
                    or other.x + other.w <= rect.x
                    or rect.y + rect.h <= other.y
                    or other.y + other.h <= rect.y
                )
                assert disjoint, (rect, other)
        assert any(r.w > 0 and r.h > 0 for r in rects)  # the first video always shows


def test_same_width_tiles_render_in_one_batch_with_identical_text() -> None:
    rng = np.random.default_rng(12)
    pix = [rng.integers(0, 256, (240, 320, 3), dtype=np.uint8) for _ in range(9)]
    spec = RenderSpec(160, 48, color_level=3, render_mode=2)
    batched = Compositor()
    frame = batched.render([VideoSource(i, 1, p) for i, p in enumerate(pix)], spec)
    assert batched.stats.render_calls == 1 and batched.stats.tiles_rendered == 9
    # the same frame built from tiles rendered one at a time (each tile already cached before the frame)
    single = Compositor()
    for i, p in enumerate(pix):
        rect = grid_layout(((320, 240),) * 9, 160, 48)[i]
        single._tile_rows(VideoSource(i, 1, p), rect.w, rect.h, spec)
    assert single.stats.render_calls == 9
    assert single.render([VideoSource(i, 1, p) for i, p in enumerate(pix)], spec) == frame
    assert single.stats.tiles_rendered == 9  # the frame only reused cached tiles
