"""Per-receiver frame text from the newest video of up to 9 sources, doing each piece of work once.

Three bounded LRU caches make N receivers cheap: scaled pixels per (source, seq, pixel size), rendered tile
rows per (source, seq, tile size, palette, colour level, render mode), and whole frames per (sources + seqs,
RenderSpec). 32 receivers with the same spec cost one render; receivers with other specs reuse every tile
whose size and style match, and a new frame from one sender re-renders only that sender's tile.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np

from .ansi import RESET, render_rows
from .layout import MAX_TILES, Rect, grid_layout, tiles_for
from .spec import RenderSpec

# Cache budgets in bytes. Entries for old seqs are dead weight, so budgets only need the live set of one
# tick: 32 distinct 160x48 truecolor frames (~120 KB each) plus their tiles.
FRAME_CACHE_BYTES = 8 * 1024 * 1024
TILE_CACHE_BYTES = 8 * 1024 * 1024
SCALED_CACHE_BYTES = 4 * 1024 * 1024

# The C client displays at most 1 MiB of a frame (ACIP.md 5.2), so a frame is never made bigger than that:
# a huge terminal gets the picture rendered for a smaller box (worst-case bytes per cell below).
FRAME_BYTE_BUDGET = 1024 * 1024 - 4096  # and leaves room for headers under the 1 MiB encryption limit
_WORST_CELL_BYTES = {"mono": 4, "color": 23, "half": 41}  # UTF-8 char; SGR + char; fg + bg SGR + U+2580


def bounded_spec(spec: RenderSpec) -> RenderSpec:
    """`spec` shrunk (aspect kept) so that even a worst-case frame stays within FRAME_BYTE_BUDGET."""
    per_cell = _WORST_CELL_BYTES["half" if spec.half_block else "color" if spec.colored else "mono"]
    cells = FRAME_BYTE_BUDGET // per_cell
    if spec.cols * spec.rows <= cells:
        return spec
    factor = math.sqrt(cells / (spec.cols * spec.rows))
    return replace(spec, cols=max(1, int(spec.cols * factor)), rows=max(1, int(spec.rows * factor)))


@dataclass(frozen=True, eq=False)
class VideoSource:
    """The newest frame of one sender. Same (source_id, seq) must mean the same pixels."""

    source_id: int
    seq: int
    pixels: np.ndarray  # H x W x 3 uint8, RGB (an RGBA array is accepted; alpha is ignored)

    def __post_init__(self) -> None:
        p = self.pixels
        if not isinstance(p, np.ndarray) or p.dtype != np.uint8 or p.ndim != 3 or p.shape[2] not in (3, 4):
            raise ValueError("video pixels must be an H x W x 3 (or 4) uint8 array")
        if p.shape[0] < 1 or p.shape[1] < 1:
            raise ValueError(f"video frame {p.shape[1]}x{p.shape[0]} is empty")

    @classmethod
    def from_image_frame(cls, source_id: int, seq: int, width: int, height: int, data: bytes) -> VideoSource:
        """Interpret IMAGE_FRAME pixels by their length (3 bytes/px RGB24, 4 bytes/px RGBA), not pixel_format.

        Real senders use pixel_format 1 and 3 for RGB24 (ACIP.md 5.1.1), so the number is not trusted.
        """
        if width < 1 or height < 1:
            raise ValueError(f"image size {width}x{height} is empty")
        count = width * height
        if len(data) == count * 3:
            pixels = np.frombuffer(data, dtype=np.uint8).reshape(height, width, 3)
        elif len(data) == count * 4:
            pixels = np.frombuffer(data, dtype=np.uint8).reshape(height, width, 4)[..., :3]
        else:
            raise ValueError(f"image data is {len(data)} bytes, expected {count * 3} (RGB24) or {count * 4} (RGBA)")
        return cls(source_id, seq, pixels)


class _ByteLRU:
    """LRU bounded by the total size of its values (as reported by `size_of`)."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.used = 0
        self._items: OrderedDict[Hashable, tuple[object, int]] = OrderedDict()

    def get(self, key: Hashable) -> object | None:
        item = self._items.get(key)
        if item is None:
            return None
        self._items.move_to_end(key)
        return item[0]

    def put(self, key: Hashable, value: object, size: int) -> None:
        old = self._items.pop(key, None)
        if old is not None:
            self.used -= old[1]
        self._items[key] = (value, size)
        self.used += size
        while self.used > self.budget and len(self._items) > 1:
            _, (_, evicted) = self._items.popitem(last=False)
            self.used -= evicted

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        self._items.clear()
        self.used = 0


def scale_nearest(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    """Nearest-neighbour resize; source index = floor(dst * src / dst_size) like the C 16.16 fixed point."""
    src_h, src_w = pixels.shape[:2]
    if (src_w, src_h) == (width, height):
        return np.ascontiguousarray(pixels[..., :3])
    ys = (np.arange(height) * src_h) // height
    xs = (np.arange(width) * src_w) // width
    # Two axis-wise takes are several times faster than one 2-D fancy index.
    scaled = pixels.take(ys, axis=0).take(xs, axis=1)
    return scaled if scaled.shape[2] == 3 else np.ascontiguousarray(scaled[..., :3])


@dataclass
class CompositorStats:
    frames_rendered: int = 0
    frame_hits: int = 0
    tiles_rendered: int = 0
    tile_hits: int = 0
    scales: int = 0
    scale_hits: int = 0
    render_calls: int = 0  # renderer invocations (a batch of same-width tiles is one call)


class Compositor:
    """Turns the current video sources into ASCII_FRAME text for one receiver's RenderSpec."""

    def __init__(
        self,
        frame_cache_bytes: int = FRAME_CACHE_BYTES,
        tile_cache_bytes: int = TILE_CACHE_BYTES,
        scaled_cache_bytes: int = SCALED_CACHE_BYTES,
    ) -> None:
        self._frames = _ByteLRU(frame_cache_bytes)
        self._tiles = _ByteLRU(tile_cache_bytes)
        self._scaled = _ByteLRU(scaled_cache_bytes)
        self.stats = CompositorStats()
        # One coarse lock: the room may render on worker threads; the caches are plain OrderedDicts.
        self._lock = threading.RLock()

    @staticmethod
    def tiles_for(n_sources: int) -> int:
        """How many videos a receiver sees for n sources (CLEAR_CONSOLE is due when this changes)."""
        return tiles_for(n_sources)

    @staticmethod
    def layout(sources: Sequence[VideoSource], spec: RenderSpec) -> tuple[Rect, ...]:
        """Tile rectangles (cells) the frame for these sources uses, before padding."""
        sizes = tuple((s.pixels.shape[1], s.pixels.shape[0]) for s in sources[:MAX_TILES])
        return grid_layout(sizes, spec.cols, spec.rows)

    def cache_sizes(self) -> dict[str, int]:
        return {
            "frames": len(self._frames),
            "frames_bytes": self._frames.used,
            "tiles": len(self._tiles),
            "tiles_bytes": self._tiles.used,
            "scaled": len(self._scaled),
            "scaled_bytes": self._scaled.used,
        }

    def forget(self, source_id: int) -> None:
        """Drop cached work for a source that left (LRU would evict it eventually; this frees it now)."""
        with self._lock:
            self._forget(source_id)

    def _forget(self, source_id: int) -> None:
        for cache in (self._frames, self._tiles, self._scaled):
            for key in [k for k in cache._items if _mentions(k, source_id)]:
                _, size = cache._items.pop(key)
                cache.used -= size

    def render(self, sources: Sequence[VideoSource], spec: RenderSpec) -> bytes:
        """Frame text for `spec` showing the first 9 sources; b"" when there is no video."""
        with self._lock:
            return self._render(sources, spec)

    def _render(self, sources: Sequence[VideoSource], spec: RenderSpec) -> bytes:
        sources = list(sources[:MAX_TILES])
        if not sources:
            return b""
        key = (tuple((s.source_id, s.seq, s.pixels.shape) for s in sources), spec)
        cached = self._frames.get(key)
        if cached is not None:
            self.stats.frame_hits += 1
            return cached  # type: ignore[return-value]
        spec = bounded_spec(spec)
        rects = self.layout(sources, spec)
        frame = self._single(sources[0], rects[0], spec) if len(sources) == 1 else self._grid(sources, rects, spec)
        if spec.colored and not frame.endswith(RESET):
            frame += RESET
        self.stats.frames_rendered += 1
        self._frames.put(key, frame, len(frame) + 200)
        return frame

    def _single(self, source: VideoSource, rect: Rect, spec: RenderSpec) -> bytes:
        rows = self._tile_rows(source, rect.w, rect.h, spec)
        if not spec.wants_padding:
            return b"\n".join(rows)
        left = b" " * ((spec.cols - rect.w) // 2)
        top = b"\n" * ((spec.rows - rect.h) // 2)
        return top + b"\n".join(left + row for row in rows)

    def _grid(self, sources: list[VideoSource], rects: tuple[Rect, ...], spec: RenderSpec) -> bytes:
        tile_rows = self._tiles_rows(sources, rects, spec)
        return b"".join(
            [
                item if item.__class__ is bytes else tile_rows[item[0]][item[1]]
                for item in _frame_plan(rects, spec.cols, spec.rows)
            ]
        )

    def _tile_rows(self, source: VideoSource, cols: int, rows: int, spec: RenderSpec) -> list[bytes]:
        return self._tiles_rows([source], (Rect(0, 0, cols, rows),), spec)[0]

    def _tiles_rows(self, sources: list[VideoSource], rects: tuple[Rect, ...], spec: RenderSpec) -> list[list[bytes]]:
        """Rendered rows of every tile, from the cache or rendered now.

        Tiles that must be rendered are batched: rows are independent (colour state restarts on every row), so
        tiles of equal width stacked vertically render as one image, and each numpy call in the renderer then
        serves several tiles instead of paying its fixed cost per tile.
        """
        half = spec.half_block
        out: list[list[bytes]] = [[] for _ in sources]
        missing: dict[int, list[tuple[int, tuple, np.ndarray]]] = {}
        for i, (source, rect) in enumerate(zip(sources, rects)):
            if rect.w <= 0 or rect.h <= 0:
                continue
            # Keys carry only what changes the tile: half-block ignores the palette, mono the render mode.
            key = (
                source.source_id,
                source.seq,
                source.pixels.shape,
                rect.w,
                rect.h,
                None if half else spec.palette,
                spec.color_level,
                spec.render_mode if spec.colored else 0,
            )
            cached = self._tiles.get(key)
            if cached is not None:
                self.stats.tile_hits += 1
                out[i] = cached  # type: ignore[assignment]
                continue
            pixels = self._scaled_pixels(source, rect.w, rect.h * 2 if half else rect.h)
            missing.setdefault(rect.w, []).append((i, key, pixels))
        for group in missing.values():
            stacked = group[0][2] if len(group) == 1 else np.concatenate([pixels for _, _, pixels in group])
            rows = render_rows(stacked, spec)
            self.stats.render_calls += 1
            start = 0
            for i, key, _pixels in group:
                height = rects[i].h
                result = rows[start : start + height]
                start += height
                self.stats.tiles_rendered += 1
                self._tiles.put(key, result, sum(len(r) for r in result) + 64 * len(result))
                out[i] = result
        return out

    def _scaled_pixels(self, source: VideoSource, width: int, height: int) -> np.ndarray:
        key = (source.source_id, source.seq, source.pixels.shape, width, height)
        cached = self._scaled.get(key)
        if cached is not None:
            self.stats.scale_hits += 1
            return cached  # type: ignore[return-value]
        scaled = scale_nearest(source.pixels, width, height)
        self.stats.scales += 1
        self._scaled.put(key, scaled, scaled.nbytes + 128)
        return scaled


@lru_cache(maxsize=256)
def _frame_plan(rects: tuple[Rect, ...], cols: int, rows: int) -> tuple[bytes | tuple[int, int], ...]:
    """The frame as a flat sequence of literal blanks/newlines (bytes) and (tile, tile row) references.

    Computed once per layout, so composing a frame is one join over cached tile rows. Adjacent literals
    (a row's trailing blanks, the newline, the next row's leading blanks) are merged into one piece.
    """
    plan: list[bytes | tuple[int, int]] = []
    literal = b""
    for y in range(rows):
        if y:
            literal += b"\n"
        cursor = 0
        covering = sorted((r.x, i) for i, r in enumerate(rects) if r.w > 0 and r.h > 0 and r.y <= y < r.y + r.h)
        for x, i in covering:
            literal += b" " * (x - cursor)
            if literal:
                plan.append(literal)
                literal = b""
            plan.append((i, y - rects[i].y))
            cursor = x + rects[i].w
        literal += b" " * (cols - cursor)
    if literal:
        plan.append(literal)
    return tuple(plan)


def _mentions(key: Hashable, source_id: int) -> bool:
    if not isinstance(key, tuple) or not key:
        return False
    head = key[0]
    if isinstance(head, tuple):  # frame key: ((id, seq, shape), ...), spec
        return any(item[0] == source_id for item in head)
    return head == source_id
