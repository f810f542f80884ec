"""Media pipeline: video sources → per-receiver ASCII frame text, H.265 decoding, Opus audio mixing."""

from .audio import AudioMixer
from .compositor import Compositor, VideoSource, scale_nearest
from .h265 import H265DecodeError, H265Decoder
from .layout import Rect, choose_grid, fit_cells, grid_layout, tiles_for
from .spec import PALETTES, RenderSpec, palette_for

__all__ = [
    "PALETTES",
    "AudioMixer",
    "Compositor",
    "H265DecodeError",
    "H265Decoder",
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
