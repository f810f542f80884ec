"""Media pipeline: video sources → per-receiver ASCII frame text, H.265 decoding, Opus audio mixing."""

from .compositor import Compositor, VideoSource, scale_nearest
from .layout import Rect, choose_grid, fit_cells, grid_layout, tiles_for
from .spec import PALETTES, RenderSpec, palette_for

__all__ = [
    "PALETTES",
    "Compositor",
    "Rect",
    "RenderSpec",
    "VideoSource",
    "choose_grid",
    "fit_cells",
    "grid_layout",
    "palette_for",
    "scale_nearest",
    "tiles_for",
]
